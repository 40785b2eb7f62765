// The console's one door to the engine: POST /graphql with the signed-in token. The token is
// kept in this tab's session storage (gone when the tab closes) and never put in a URL.

const TOKEN_KEY = 'cmdb.console.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signIn(text) {
  sessionStorage.setItem(TOKEN_KEY, text.trim());
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An answer with errors: the first error's message and its `extensions.code`. */
export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code || 'ERROR';
  }
}

/** Runs one GraphQL operation; resolves to `data`, or throws an ApiError. */
export async function gql(query, variables = {}) {
  let response;
  try {
    response = await fetch('/graphql', {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        Accept: 'application/graphql-response+json, application/json;q=0.9',
        Authorization: `Bearer ${token() || ''}`,
      },
      body: JSON.stringify({ query, variables }),
    });
  } catch (failure) {
    throw new ApiError(`the server cannot be reached (${failure.message})`, 'UNREACHABLE');
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`the server answered HTTP ${response.status} without JSON`, `HTTP_${response.status}`);
  }
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    throw new ApiError(first.message, first.extensions && first.extensions.code);
  }
  if (!response.ok) throw new ApiError(`HTTP ${response.status}`, `HTTP_${response.status}`);
  return body.data;
}

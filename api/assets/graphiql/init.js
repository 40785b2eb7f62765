// Starts GraphiQL against this server, from this server's own files only (the page's
// Content-Security-Policy allows nothing else). Requests need a token: put it in the
// Headers tab as {"Authorization": "Bearer cmdb_..."}. The same header is used for the
// schema fetch (GraphiQL fetches the schema again as soon as the token in the Headers tab
// changes) and for subscriptions (sent in connection_init). The headers are kept in this
// browser's local storage, so a reload keeps the token; clear them to forget it.
(function () {
  var url = new URL('/graphql', window.location.href).toString();
  var subscriptionUrl = url.replace(/^http/, 'ws') + '/ws';
  var HEADERS_KEY = 'graphiql:headers';
  var PLACEHOLDER = '{\n  "Authorization": "Bearer <your cmdb_ token>"\n}';
  // How long the Headers tab must stay unchanged before the schema is fetched again.
  var REFETCH_DELAY_MS = 400;

  var parseHeaders = function (text) {
    try {
      var parsed = JSON.parse(text || '{}');
      return parsed && typeof parsed === 'object' ? parsed : {};
    } catch (error) {
      return {};
    }
  };
  var authorizationOf = function (headers) {
    var names = Object.keys(headers);
    for (var i = 0; i < names.length; i += 1) {
      if (names[i].toLowerCase() === 'authorization') {
        return String(headers[names[i]]);
      }
    }
    return '';
  };
  var storedHeaders = function () {
    try {
      return window.localStorage.getItem(HEADERS_KEY) || '';
    } catch (error) {
      return '';
    }
  };

  // One fetcher per token: GraphiQL fetches the schema again whenever its fetcher changes.
  var fetcherFor = function (authorization) {
    return GraphiQL.createFetcher({
      url: url,
      subscriptionUrl: subscriptionUrl,
      headers: authorization ? { Authorization: authorization } : {},
      wsConnectionParams: function () {
        return authorization ? { Authorization: authorization } : {};
      },
    });
  };

  function Console() {
    var initial = authorizationOf(parseHeaders(storedHeaders()));
    var state = React.useState(initial);
    var authorization = state[0];
    var setAuthorization = state[1];
    var fetcher = React.useMemo(
      function () {
        return fetcherFor(authorization);
      },
      [authorization]
    );
    var timer = React.useRef(null);
    var onEditHeaders = React.useCallback(function (text) {
      window.clearTimeout(timer.current);
      timer.current = window.setTimeout(function () {
        setAuthorization(authorizationOf(parseHeaders(text)));
      }, REFETCH_DELAY_MS);
    }, []);
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      shouldPersistHeaders: true,
      defaultHeaders: PLACEHOLDER,
      onEditHeaders: onEditHeaders,
    });
  }

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(Console));
})();

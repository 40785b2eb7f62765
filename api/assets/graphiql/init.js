// Starts GraphiQL against this server, from this server's own files only (the page's
// Content-Security-Policy allows nothing else). Requests need a token: put it in the
// Headers tab as {"Authorization": "Bearer cmdb_..."}; subscriptions send it in
// connection_init.
(function () {
  var url = new URL('/graphql', window.location.href).toString();
  var subscriptionUrl = url.replace(/^http/, 'ws') + '/ws';
  var storedHeaders = function () {
    try {
      return JSON.parse(window.localStorage.getItem('graphiql:headers') || '{}');
    } catch (error) {
      return {};
    }
  };
  var fetcher = GraphiQL.createFetcher({
    url: url,
    subscriptionUrl: subscriptionUrl,
    wsConnectionParams: function () {
      return storedHeaders();
    },
  });
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      defaultHeaders: '{\n  "Authorization": "Bearer <your cmdb_ token>"\n}',
    })
  );
})();

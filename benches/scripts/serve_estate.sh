# Sourced by the HTTP bench scripts: builds the release binary, loads an estate of $SIZE into
# $WORK/estate once, serves it on $PORT (stopped when the script exits) and sets $TOKEN to
# the admin token (kept in $WORK/token: it is printed only on the first start). $SERVE_ARGS, if
# set, is added to the serve command line (limits raised for a measurement).
cargo build --release -p cmdb-api >/dev/null
mkdir -p "$WORK"
if [ ! -f "$WORK/estate/events.sqlite" ]; then
  rm -rf "$WORK/estate"; mkdir -p "$WORK/estate"
  "$BIN" --data-dir "$WORK/estate" fixtures load --size "$SIZE"
fi
"$BIN" --data-dir "$WORK/estate" serve --listen "127.0.0.1:$PORT" ${SERVE_ARGS:-} > "$WORK/serve.out" 2> "$WORK/serve.err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz"; do sleep 0.2; done
TOKEN=$(grep -o "cmdb_[0-9a-f]\{64\}" "$WORK/serve.out" | head -1 || true)
[ -n "$TOKEN" ] && echo "$TOKEN" > "$WORK/token"
TOKEN=$(cat "$WORK/token")

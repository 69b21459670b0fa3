#!/usr/bin/env bash
# `make image`: the "Ship it" path by hand, with the commands the README shows.
#   demo Bento (data/demo, trained by `make demo` or here) -> `mixrec build --base local`
#   -> `mixrec image build` -> a throwaway docker-registry on a free loopback port
#   -> `mixrec image push --insecure` -> podman rmi -> `mixrec image run --pull` -> /readyz,
#   recommend, recommend_by_query -> container and registry stopped (by container id / pid).
# Env: DATA (default data/demo), KEEP=1 leaves the container running (the registry is always stopped).
set -euo pipefail
cd "$(dirname "$0")/.."
MIXREC=${MIXREC:-.venv/bin/mixrec}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/demo}

if [ ! -f "$DATA/bento.json" ]; then
  "$MIXREC" demo --no-serve --data-dir "$DATA"
fi
bento=$("$MIXREC" build --base local | sed -n 's/^built \(mixrec:[^ ]*\).*/\1/p')
version=${bento#mixrec:}
echo "== Bento $bento (local base)"

"$MIXREC" image build "$bento" --tag "localhost/mixrec:$version"

work=$(mktemp -d)
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $work/data}
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
name="mixrec-ship-$version"
cleanup() {
  [ "${KEEP:-0}" = 1 ] || { podman stop -t 10 "$name" >/dev/null 2>&1 || true; podman rm -f "$name" >/dev/null 2>&1 || true; }
  kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.2; done
echo "== registry 127.0.0.1:$port (pid $registry_pid)"

ref="127.0.0.1:$port/mixrec:$version"
"$MIXREC" image push "localhost/mixrec:$version" "$ref" --insecure
podman rmi "localhost/mixrec:$version" "$ref" >/dev/null 2>&1 || true

app_port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$DATA/container-state"
"$MIXREC" image run "$ref" --pull --insecure --name "$name" --port "$app_port" --state-dir "$DATA/container-state"

user=$("$PY" -c 'import collections, sys; from mixrec.catalog import read_interactions
print(collections.Counter(r.user_id for r in read_interactions(sys.argv[1])).most_common(1)[0][0])' "$DATA")
echo "== recommend ($user)"
curl -s -X POST "http://127.0.0.1:$app_port/recommend" -H 'Content-Type: application/json' -d "{\"user_id\": \"$user\", \"k\": 3}"; echo
echo "== recommend_by_query"
curl -s -X POST "http://127.0.0.1:$app_port/recommend_by_query" -H 'Content-Type: application/json' -d '{"text": "hiking backpacking camping", "k": 3}'; echo
if [ "${KEEP:-0}" = 1 ]; then
  echo "container $name left running on 127.0.0.1:$app_port: podman stop $name && podman rm $name"
fi

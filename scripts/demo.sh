#!/usr/bin/env bash
# The README's curl walkthrough, end to end, against a fresh cohostd:
# builds cohostd (release), starts it on a temp data dir and a free port, runs the seed flow
# (create a room, go live, invite, the invitee accepts and gets LiveKit credentials, live updates over SSE, stop),
# printing each step's request and response, then stops the daemon with SIGTERM.
#
#   bash scripts/demo.sh              # or: just demo
#   COHOSTD=target/debug/cohostd bash scripts/demo.sh   # use an existing binary, skip the build
#
# Needs curl and python3 (to pull ids out of JSON).
set -euo pipefail

cd "$(dirname "$0")/.."

if [[ -z "${COHOSTD:-}" ]]; then
  echo "==> building cohostd (release)"
  cargo build --release -p cohostd
  COHOSTD=target/release/cohostd
fi

DATA=$(mktemp -d "${TMPDIR:-/tmp}/cohost-demo.XXXXXX")
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
BASE="http://127.0.0.1:$PORT"
LOG="$DATA.log"
PID=""
SSE_PID=""

cleanup() {
  [[ -n "$SSE_PID" ]] && kill "$SSE_PID" 2>/dev/null || true
  [[ -n "$PID" ]] && kill -TERM "$PID" 2>/dev/null || true
  rm -rf "$DATA" "$DATA.sse"
}
trap cleanup EXIT

echo "==> starting cohostd on $BASE with data dir $DATA (log: $LOG)"
"$COHOSTD" --data-dir "$DATA" --http-addr "127.0.0.1:$PORT" >"$LOG" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
  if ! kill -0 "$PID" 2>/dev/null; then echo "cohostd exited:"; cat "$LOG"; exit 1; fi
  sleep 0.1
done

# Dev JWTs, signed with the generated secret in $DATA/dev-auth-secret (what `cargo run --release -- token` does).
ALICE=$("$COHOSTD" --data-dir "$DATA" token --user alice)
BOB=$("$COHOSTD" --data-dir "$DATA" token --user bob)
DAVE=$("$COHOSTD" --data-dir "$DATA" token --user dave)
EVE=$("$COHOSTD" --data-dir "$DATA" token --user eve)

json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

step=0
# call TITLE METHOD PATH TOKEN [BODY]: prints the step, the request and the response; the body is left in $OUT.
call() {
  local title=$1 method=$2 path=$3 token=$4 body=${5:-}
  step=$((step + 1))
  echo
  echo "== $step. $title"
  local args=(-sS -X "$method" "$BASE$path" -H "Authorization: Bearer $token" -w '\n%{http_code}')
  if [[ -n "$body" ]]; then
    args+=(-H 'Content-Type: application/json' -d "$body")
    echo "\$ curl -X $method $BASE$path -H 'Authorization: Bearer \$${token_name}' -d '$body'"
  else
    echo "\$ curl -X $method $BASE$path -H 'Authorization: Bearer \$${token_name}'"
  fi
  local raw
  raw=$(curl "${args[@]}")
  OUT=${raw%$'\n'*}
  local status=${raw##*$'\n'}
  echo "HTTP $status"
  echo "$OUT" | python3 -m json.tool 2>/dev/null || echo "$OUT"
}
as() { token_name=$1; }

as ALICE; call "alice creates a room" POST /v1/rooms "$ALICE" '{"room_id": "stage-1", "title": "Friday show"}'

step=$((step + 1))
echo
echo "== $step. alice watches her room's invitations live (SSE, in the background)"
echo "\$ curl -N -H 'Accept: text/event-stream' -H 'Authorization: Bearer \$ALICE' $BASE/v1/rooms/stage-1/invitations"
curl -sS -N --max-time 30 -H 'Accept: text/event-stream' -H "Authorization: Bearer $ALICE" \
  "$BASE/v1/rooms/stage-1/invitations" >"$DATA.sse" 2>&1 &
SSE_PID=$!
sleep 0.3

as ALICE; call "alice goes live" POST /v1/rooms/stage-1/live "$ALICE"
as ALICE; call "alice invites bob" POST /v1/rooms/stage-1/invitations "$ALICE" '{"user_id": "bob"}'
INVITATION=$(echo "$OUT" | json 'd["invitation_id"]')
as BOB; call "bob sees the pending invitation" GET '/v1/me/invitations?status=pending' "$BOB"
as BOB; call "bob accepts, and receives his LiveKit credentials" POST "/v1/invitations/$INVITATION/accept" "$BOB"
as BOB; call "bob fetches fresh broadcaster data later" GET /v1/rooms/stage-1/broadcaster-data "$BOB"
as ALICE; call "the room: bob holds a seat" GET /v1/rooms/stage-1 "$ALICE"
as ALICE; call "alice makes dave a moderator" POST /v1/rooms/stage-1/moderators "$ALICE" '{"user_id": "dave"}'
as DAVE; call "dave mutes bob's microphone" POST /v1/rooms/stage-1/cohosts/bob/media "$DAVE" '{"audio": false}'
as DAVE; call "dave moves bob to seat 3" POST /v1/rooms/stage-1/cohosts/bob/move "$DAVE" '{"seat": 3}'
as EVE; call "eve raises her hand" POST /v1/rooms/stage-1/requests "$EVE"
as DAVE; call "dave bans eve for an hour: her request is cancelled" POST /v1/rooms/stage-1/bans "$DAVE" '{"user_id": "eve", "duration_s": 3600}'
as EVE; call "eve cannot ask again (403)" POST /v1/rooms/stage-1/requests "$EVE"
as ALICE; call "alice stops the room" POST /v1/rooms/stage-1/stop "$ALICE"

sleep 0.3
kill "$SSE_PID" 2>/dev/null || true
wait "$SSE_PID" 2>/dev/null || true
SSE_PID=""
step=$((step + 1))
echo
echo "== $step. what the SSE stream received (one snapshot, then one change per event)"
cat "$DATA.sse"

echo
echo "==> stopping cohostd (SIGTERM)"
kill -TERM "$PID"
wait "$PID" || true
PID=""
tail -n 2 "$LOG"
rm -f "$LOG"

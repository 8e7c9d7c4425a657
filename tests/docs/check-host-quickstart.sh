#!/usr/bin/env bash
# Runs the commands of docs/host-quickstart.md, so the quickstart cannot rot.
#
# Every command line of the document's ```sh blocks must be listed below, either as run here
# (with what its output must show) or as skipped with the reason; a new or changed command in the
# document fails this check until it is classified. The run happens as root in private network,
# mount and PID namespaces: `make run` listens on 127.0.0.1@5353 of a private loopback, its rundir
# /run/kres-operator and cache /var/cache/knot-resolver are private tmpfs mounts, `ps` sees only
# this run's processes, and everything dies with the script.
#
# Usage: tests/docs/check-host-quickstart.sh   (root; `make docs-check`; CARGO_TARGET_DIR honoured)
set -euo pipefail
cd "$(dirname "$0")/../.."
DOC=docs/host-quickstart.md

fail() { echo "docs-check: $*" >&2; exit 1; }

# --- 1. Classify every command of the document ---------------------------------------------
# Command lines of ```sh blocks: not a comment, trailing "   # ..." comments removed.
commands() {
  awk '/^```sh$/ {in_sh=1; next} /^```/ {in_sh=0} in_sh' "$DOC" |
    sed -E 's/[[:space:]]+#.*$//' | grep -vE '^[[:space:]]*(#|$)' || true
}
declare -A SKIPPED=(
  ["apt-get install knot-resolver supervisor"]="installs packages; checked here with dpkg -s"
  ["cargo build --release -p kres-operator"]="a release build takes minutes; make bench builds it"
  ["install -m 0755 target/release/kres-operator /usr/local/bin/"]="changes the host; the run below uses the built binary"
)
RUN=(
  "make run"
  "kdig @127.0.0.1 -p 5353 router.home.example.test"
  "jq '.[\"last-failure\"]' /run/kres-operator/status.json"
  "cat RUNDIR/status.json"
  "supervisorctl -c RUNDIR/supervisord.conf status"
  "tail RUNDIR/logs/kresd0.log"
  "ps -o user,pid,cmd -C kresd,kres-cache-gc"
  "ls -ld /run/kres-operator"
  "ls -ld /var/cache/knot-resolver"
)
unclassified=0
while IFS= read -r c; do
  known=0
  [[ -n "${SKIPPED[$c]+x}" ]] && known=1
  for r in "${RUN[@]}"; do [[ "$c" == "$r" ]] && known=1; done
  if [[ $known == 0 ]]; then echo "docs-check: $DOC: unclassified command: $c" >&2; unclassified=1; fi
done < <(commands)
[[ $unclassified == 0 ]] || fail "classify the commands above in $0"
for r in "${RUN[@]}" "${!SKIPPED[@]}"; do
  commands | grep -qxF -- "$r" || fail "$DOC no longer has: $r (update $0)"
done

# --- 2. Enter private namespaces -----------------------------------------------------------
[[ $(id -u) == 0 ]] || fail "needs root (private namespaces, make run as root)"
if [[ "${KRES_DOCS_CHECK_INSIDE:-}" != 1 ]]; then
  exec env KRES_DOCS_CHECK_INSIDE=1 unshare --net --mount --pid --fork --mount-proc \
    --propagation private "$0" "$@"
fi
ip link set lo up
target=${CARGO_TARGET_DIR:-$PWD/target}
saved=$(mktemp -d)
mount --bind /var/cache "$saved"
mount -t tmpfs -o mode=0755 tmpfs /var/cache
case "$target" in
  /var/cache/*) mkdir -p "$target"; mount --bind "$saved/${target#/var/cache/}" "$target" ;;
esac
mount -t tmpfs -o mode=0755 tmpfs /run
log=$(mktemp)
work=$(mktemp -d)

expect() { # expect NAME PATTERN TEXT: TEXT matches the extended regex PATTERN
  grep -qE -- "$2" <<<"$3" || fail "$1: expected /$2/ in:
$3"
}
run() { # run COMMAND: as the document writes it, RUNDIR replaced
  local c=${1//RUNDIR//run/kres-operator}
  echo "\$ $c" >&2
  bash -c "$c" 2>&1
}

# --- 3. Install (what can run here) -------------------------------------------------------
dpkg -s knot-resolver supervisor >/dev/null || fail "knot-resolver or supervisor not installed (make deps)"

# --- 4. Try it ---------------------------------------------------------------------------
setsid make run >"$log" 2>&1 &
make_pid=$!
answer=""
for _ in $(seq 1 600); do   # make run may compile first
  answer=$(kdig @127.0.0.1 -p 5353 router.home.example.test +short +timeout=1 +retry=0 2>/dev/null || true)
  [[ -n "$answer" ]] && break
  kill -0 "$make_pid" 2>/dev/null || fail "make run exited: $(tail -20 "$log")"
  sleep 1
done
out=$(run "kdig @127.0.0.1 -p 5353 router.home.example.test")
expect kdig 'router\.home\.example\.test\..*A[[:space:]]+192\.168\.1\.1' "$out"

# The excerpt of manifests/examples/config.yaml is valid and every line of it is in the file.
awk '/^`manifests\/examples\/config.yaml`/ {f=1} f && /^```yaml$/ {y=1; next} y && /^```/ {exit} y' "$DOC" >"$work/excerpt.yaml"
[[ -s "$work/excerpt.yaml" ]] || fail "no config.yaml excerpt found in $DOC"
while IFS= read -r line; do
  grep -qxF -- "$line" manifests/examples/config.yaml || fail "excerpt line not in manifests/examples/config.yaml: $line"
done <"$work/excerpt.yaml"
"$target/debug/kresctl" validate "$work/excerpt.yaml" >/dev/null

# --- 5. Options: every flag of the synopsis exists --------------------------------------
help=$("$target/debug/kres-operator" host --help)
for flag in $(awk '/^## Options/ {f=1} f && /^```$/ {n++; next} f && n==1' "$DOC" | grep -oE -- '--[a-z-]+' | sort -u); do
  grep -qE -- "$flag( |,|$)" <<<"$help" || fail "$DOC names $flag, which kres-operator host does not have"
done

# --- 6. Inspect and least privilege ------------------------------------------------------
# Wait until the operator wrote a status showing every worker running.
for _ in $(seq 1 60); do
  [[ -s /run/kres-operator/status.json ]] && break
  sleep 0.5
done
out=$(run "jq '.[\"last-failure\"]' /run/kres-operator/status.json")
expect jq '^null$' "$out"
out=$(run "cat RUNDIR/status.json")
jq -e . >/dev/null <<<"$out" || fail "status.json is not JSON: $out"
out=$(run "supervisorctl -c RUNDIR/supervisord.conf status")
expect supervisorctl '^kresd0[[:space:]]+RUNNING' "$out"
expect supervisorctl '^kresd1[[:space:]]+RUNNING' "$out"
out=$(run "tail RUNDIR/logs/kresd0.log")
out=$(run "ps -o user,pid,cmd -C kresd,kres-cache-gc")
expect ps 'kresd' "$out"
# Every worker's user is knot-resolver (ps shortens names longer than 8 characters).
if tail -n +2 <<<"$out" | grep -vE '^knot-re(solver|\+) '; then fail "a worker does not run as knot-resolver: $out"; fi
out=$(run "ls -ld /run/kres-operator")
expect 'ls rundir' '^drwxr-x--- [0-9]+ root knot-resolver ' "$out"
out=$(run "ls -ld /var/cache/knot-resolver")
expect 'ls cache' '^drwxr-x--- [0-9]+ knot-resolver knot-resolver ' "$out"

# --- 7. What a change looks like: SIGHUP re-reads; the resolver keeps answering ---------
pid=$(pgrep -f -n -- 'kres-operator host --config' || true)
[[ -n "$pid" ]] || fail "no kres-operator host process"
kill -HUP "$pid"
for _ in $(seq 1 20); do
  grep -qE 'configuration re-read|configuration changed' "$log" && break
  sleep 0.5
done
grep -qE 'configuration re-read|configuration changed' "$log" || fail "SIGHUP: no re-read logged: $(tail -5 "$log")"
out=$(kdig @127.0.0.1 -p 5353 router.home.example.test +short)
expect 'kdig after SIGHUP' '^192\.168\.1\.1$' "$out"

# --- 8. systemd unit: valid directives, flags the binary has -----------------------------
awk '/^```ini$/ {f=1; next} f && /^```/ {exit} f' "$DOC" | sed "s|/usr/local/bin/kres-operator|$target/debug/kres-operator|" >"$work/kres-operator.service"
grep -q '^ExecStart=' "$work/kres-operator.service" || fail "no unit in $DOC"
if command -v systemd-analyze >/dev/null; then
  verify=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$work/kres-operator.service" 2>&1 || true)
  if grep -iE 'unknown|invalid|failed' <<<"$verify"; then fail "systemd-analyze verify: $verify"; fi
fi
for flag in $(grep '^ExecStart=' "$work/kres-operator.service" | grep -oE -- '--[a-z-]+'); do
  grep -qE -- "$flag( |,|$)" <<<"$help" || fail "the unit uses $flag, which kres-operator host does not have"
done

# --- 9. Ctrl-C stops it ------------------------------------------------------------------
kill -INT -- "-$make_pid"
for _ in $(seq 1 40); do kill -0 "$make_pid" 2>/dev/null || break; sleep 0.5; done
! kill -0 "$make_pid" 2>/dev/null || fail "make run did not stop on SIGINT"
if pgrep -x kresd >/dev/null; then fail "kresd still running after Ctrl-C: $(ps -o pid,cmd -C kresd)"; fi
for c in "${!SKIPPED[@]}"; do echo "docs-check: skipped '$c': ${SKIPPED[$c]}"; done
echo "docs-check: $DOC: ok (${#RUN[@]} commands run, ${#SKIPPED[@]} skipped)"

#!/usr/bin/env bash
# hivetrain neuron launcher and auto-updater, shared by run_miner.sh and run_validator.sh.
#
#   pm2 start run_miner.sh --name NAME -- [--autoupdate.* flags] [neuron flags]
#
# The script is not the neuron: it starts `neurons/<role>.py` as its own pm2 process named
# NAME-neuron (override with --autoupdate.neuron_name) with every non --autoupdate.* flag passed
# through unchanged, then stays up as the updater. Every --autoupdate.interval seconds it fetches
# the upstream branch, compares the version in upstream hivetrain/__init__.py with the local one
# (semantic versions) and, only when upstream is newer, fast-forwards, reinstalls (`pip install -r
# requirements.txt`, then `pip install --no-deps -e .`, as `make install` does), runs
# `python post_install.py`, restarts the neuron, checks that it stays up and re-executes itself
# from the new code. A new version whose install, checks or neuron fail is rolled back to the
# previous commit. A neuron already running this commit with these flags is left running, so
# restarting the updater (pm2 restart, pm2 resurrect) does not interrupt training.
#
# Safe by construction: it never discards local changes or commits. A dirty tree, local commits
# that are not on upstream, or anything else that is not a clean fast-forward is logged and skipped.
#
# Flags consumed here (never passed to the neuron):
#   --autoupdate.interval SECONDS        between checks (default 1200)
#   --autoupdate.remote NAME_OR_URL      upstream to fetch (default origin)
#   --autoupdate.branch BRANCH           upstream branch (default: the checked-out branch)
#   --autoupdate.neuron_name NAME        pm2 name of the neuron (default: <pm2 name>-neuron, or
#                                        hivetrain-<role>-neuron when not started by pm2)
#   --autoupdate.health_timeout SECONDS  how long a restarted neuron may take to come up (default 300)
#   --autoupdate.health_stable SECONDS   how long it must then stay up without a restart (default 30)
#   --autoupdate.once                    start the neuron if needed, run one check, exit (status 1
#                                        when an update had to be rolled back)
#   --autoupdate.off                     start the neuron if needed, never update
#
# Environment:
#   HIVETRAIN_PYTHON       interpreter for the neuron, pip and post_install.py
#                          (default: <repo>/.venv/bin/python if present, else python3)
#   HIVETRAIN_PM2          pm2 executable (default: pm2 on PATH, else <repo>/node_modules/.bin/pm2)
#   HIVETRAIN_INSTALL_CMD  command run (with bash, in the repo, HIVETRAIN_PYTHON set) instead of the
#                          two pip installs after a pull; the tests use it to keep the reinstall cheap
#
# Health check after a restart: the neuron's pm2 status must be "online" with no pm2 restart, and,
# when --axon.port is among the neuron flags (and not 0), GET http://127.0.0.1:PORT/v1/status must
# answer 200; then it must stay so for --autoupdate.health_stable seconds.
#
# State lives in <git dir>/hivetrain-autoupdate/: `lock` (one update at a time per checkout, also
# across a miner and a validator sharing it), `rejected` (the upstream commit last rolled back, not
# tried again until upstream moves on) and `updating` (an update in progress, finished by the next
# start if the updater is killed half-way).
set -euo pipefail

# ----------------------------------------------------------------------------------------------
# Python snippets. They are kept inside this script (not in a helper file) on purpose: the
# rollback path must not depend on files that the update it is undoing may have broken.
# ----------------------------------------------------------------------------------------------

# stdin: a Python file; prints its __version__.
PY_READ_VERSION='
import re, sys
match = re.search(r"""^__version__\s*=\s*["\x27]([^"\x27]+)["\x27]""", sys.stdin.read(), re.M)
if not match:
    sys.exit("no __version__ = \"...\" line")
print(match.group(1))
'

# argv: A B; prints -1, 0 or 1 as A <, == or > B by semantic-versioning precedence
# (MAJOR.MINOR.PATCH, a pre-release sorts before its release, build metadata is ignored).
PY_SEMVER_CMP='
import re, sys
def key(text):
    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?", text.strip())
    if not m:
        sys.exit(f"not a semantic version: {text!r}")
    core = tuple(int(part) for part in m.group(1, 2, 3))
    if m.group(4) is None:
        return core, (1,)
    # Numeric identifiers sort before alphanumeric ones and compare as numbers.
    pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in m.group(4).split("."))
    return core, (0, pre)
a, b = key(sys.argv[1]), key(sys.argv[2])
print((a > b) - (a < b))
'

# stdin: `pm2 jlist` output; argv: NAME SCRIPT ARG...
# prints "<status> <restart_time> <commit> <same_launch 0|1> <exit_code> <last error line>", or
# "missing 0 - 0 - -"; the last error line (from its pm2 error log) only once the neuron stopped.
PY_NEURON_STATE='
import json, os, sys
name, script, args = sys.argv[1], sys.argv[2], sys.argv[3:]
text = sys.stdin.read()
apps = None
for start in (i for i, ch in enumerate(text) if ch == "["):  # pm2 may print "[PM2] ..." lines first
    try:
        apps = json.JSONDecoder().raw_decode(text[start:])[0]
    except ValueError:
        continue
    if isinstance(apps, list) and all(isinstance(app, dict) for app in apps):
        break
    apps = None
if apps is None:
    sys.exit("no JSON process list in pm2 jlist output")
for app in apps:
    if app.get("name") != name:
        continue
    env = app.get("pm2_env", {})
    commit = env.get("HIVETRAIN_NEURON_COMMIT") or env.get("env", {}).get("HIVETRAIN_NEURON_COMMIT") or "-"
    same = env.get("args", []) == args and os.path.realpath(env.get("pm_exec_path", "")) == os.path.realpath(script)
    status, reason = env.get("status", "unknown"), "-"
    if status in ("stopped", "errored"):
        try:
            with open(env.get("pm_err_log_path", ""), errors="replace") as log:
                lines = [line.strip() for line in log if line.strip()]
            reason = lines[-1] if lines else "-"
        except OSError:
            pass
    code = env.get("exit_code")
    print(status, int(env.get("restart_time", 0)), commit, int(same), "-" if code is None else code, reason)
    break
else:
    print("missing 0 - 0 - -")
'

# argv: PORT; exit 0 when GET /v1/status on localhost answers 200.
PY_HTTP_OK='
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{int(sys.argv[1])}/v1/status", timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
'

# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------

CONFIG_ERROR_EXIT=2  # what `hivetrain` exits with when its configuration cannot work

log() { printf '%s [autoupdate %s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${ROLE:-?}" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# Commands run while the update lock is held must not inherit its descriptor (fd 9): a process
# that outlives us (the pm2 daemon, a detached `git gc --auto`) would otherwise keep the lock.
git() { command git "$@" 9>&-; }
pm2_run() { "$PM2" "$@" 9>&-; }

short() { git rev-parse --short "$1"; }

# Version in hivetrain/__init__.py at a git revision.
version_at() { git show "$1:hivetrain/__init__.py" | "$PY" -c "$PY_READ_VERSION"; }

semver_cmp() { "$PY" -c "$PY_SEMVER_CMP" "$1" "$2"; }

require_seconds() {  # $1 flag, $2 value: a positive whole number of seconds
    [[ "$2" =~ ^[0-9]+$ && "$2" -gt 0 ]] || die "$1 must be a positive whole number of seconds, got '$2'"
}

# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------

parse_args() {
    INTERVAL=1200 REMOTE=origin BRANCH="" NEURON_NAME="" HEALTH_TIMEOUT=300 HEALTH_STABLE=30
    ONCE=0 OFF=0 AXON_PORT=""
    NEURON_ARGS=()
    local flag value
    while (($#)); do
        flag="$1"
        case "$flag" in
            --autoupdate.once) ONCE=1; shift; continue ;;
            --autoupdate.off) OFF=1; shift; continue ;;
            --autoupdate.*=*) value="${flag#*=}"; flag="${flag%%=*}"; shift ;;
            --autoupdate.*)
                (($# >= 2)) || die "$flag needs a value"
                value="$2"; shift 2 ;;
            *)
                # Everything else belongs to the neuron; only peek at the API port for health checks.
                case "$flag" in
                    --axon.port=*) AXON_PORT="${flag#*=}" ;;
                    --axon.port) AXON_PORT="${2:-}" ;;
                esac
                NEURON_ARGS+=("$flag"); shift; continue ;;
        esac
        case "$flag" in
            --autoupdate.interval) require_seconds "$flag" "$value"; INTERVAL="$value" ;;
            --autoupdate.remote) REMOTE="$value" ;;
            --autoupdate.branch) BRANCH="$value" ;;
            --autoupdate.neuron_name) NEURON_NAME="$value" ;;
            --autoupdate.health_timeout) require_seconds "$flag" "$value"; HEALTH_TIMEOUT="$value" ;;
            --autoupdate.health_stable) require_seconds "$flag" "$value"; HEALTH_STABLE="$value" ;;
            *) die "unknown flag $flag (the --autoupdate.* flags are listed at the top of scripts/autoupdate.sh)" ;;
        esac
    done
    [[ -z "$AXON_PORT" || "$AXON_PORT" =~ ^[0-9]+$ ]] || die "--axon.port must be a number, got '$AXON_PORT'"
}

resolve_python() {
    if [[ -n "${HIVETRAIN_PYTHON:-}" ]]; then
        PY="$HIVETRAIN_PYTHON"
    elif [[ -x "$REPO/.venv/bin/python" ]]; then
        PY="$REPO/.venv/bin/python"
    else
        PY="python3"
    fi
    # pm2 needs an absolute interpreter path, and a clear error beats a crash loop.
    PY="$(command -v "$PY")" || die "python not found ('${HIVETRAIN_PYTHON:-python3}'); create $REPO/.venv or set HIVETRAIN_PYTHON"
}

resolve_pm2() {
    if [[ -n "${HIVETRAIN_PM2:-}" ]]; then
        PM2="$(command -v "$HIVETRAIN_PM2")" || die "HIVETRAIN_PM2=$HIVETRAIN_PM2 is not an executable"
    elif PM2="$(command -v pm2)"; then
        :
    elif [[ -x "$REPO/node_modules/.bin/pm2" ]]; then
        PM2="$REPO/node_modules/.bin/pm2"
    else
        die "pm2 not found. Install it with:  npm install -g pm2   (needs Node.js; or run 'npm ci' in $REPO for the pinned copy in node_modules/.bin)"
    fi
}

# Variables pm2 (7.x) puts into the environment of every process it runs: its whole app record,
# plus NODE_CHANNEL_FD, its IPC pipe. A pm2 CLI started from here would read them as its own app
# settings (the neuron would be started with our name and bash as interpreter) and the neuron
# would inherit them, so they are dropped once their one useful value, our pm2 name, is read.
PM2_INJECTED_VARS=(
    NODE_APP_INSTANCE NODE_CHANNEL_FD NODE_CHANNEL_SERIALIZATION_MODE PM2_INTERACTOR_PROCESSING
    PM2_JSON_PROCESSING PM2_USAGE automation autorestart autostart axm_actions axm_dynamic
    axm_monitor axm_options created_at cron_restart env exec_interpreter exec_mode
    instance_var instances kill_retry_time km_link merge_logs name namespace node_args pm_cwd
    pm_err_log_path pm_exec_path pm_id pm_out_log_path pm_pid_path pm_uptime pmx restart_time
    status treekill unique_id unstable_restarts username version versioning vizion
    vizion_running watch windowsHide
)

# The neuron's pm2 name: derived from the name pm2 gave us, so `pm2 start run_miner.sh --name m1`
# gives an updater "m1" and a neuron "m1-neuron". The name is kept in HIVETRAIN_UPDATER_NAME for
# the re-executed updater, which no longer sees pm2's variables.
resolve_names() {
    if [[ -z "${HIVETRAIN_UPDATER_NAME:-}" && -n "${pm_id:-}" && -n "${name:-}" ]]; then
        export HIVETRAIN_UPDATER_NAME="$name"
    fi
    unset "${PM2_INJECTED_VARS[@]}"
    local base="${HIVETRAIN_UPDATER_NAME:-hivetrain-$ROLE}"
    NEURON_NAME="${NEURON_NAME:-$base-neuron}"
    if [[ "$NEURON_NAME" == "${HIVETRAIN_UPDATER_NAME:-}" ]]; then
        die "--autoupdate.neuron_name must differ from this updater's own pm2 name '$NEURON_NAME'"
    fi
    NEURON_SCRIPT="$REPO/neurons/$ROLE.py"
}

# ----------------------------------------------------------------------------------------------
# The neuron under pm2
# ----------------------------------------------------------------------------------------------

neuron_state() {  # prints: status restart_time commit same_launch exit_code last_error_line
    local jlist
    jlist="$(pm2_run jlist 2>/dev/null)" || { echo "unknown 0 - 0 - -"; return 0; }
    printf '%s' "$jlist" | "$PY" -c "$PY_NEURON_STATE" "$NEURON_NAME" "$NEURON_SCRIPT" \
        ${NEURON_ARGS[@]+"${NEURON_ARGS[@]}"} || echo "unknown 0 - 0 - -"
}

# (Re)start the neuron from the checked-out code. delete + start rather than `pm2 restart`, so the
# flags are the current ones and the restart counter starts at 0 for the health check. pm2 stops
# it with SIGINT; the 60 s kill timeout leaves a miner time to finish its step and checkpoint.
# A neuron that exits with CONFIG_ERROR_EXIT (hivetrain's exit code for bad flags, a bad run dir
# or a bad scores.json) is not restarted: it would only fail again, in a loop pm2 shows as online.
start_neuron() {
    [[ -f "$NEURON_SCRIPT" ]] || { log "ERROR: $NEURON_SCRIPT does not exist"; return 1; }
    pm2_run delete "$NEURON_NAME" >/dev/null 2>&1 || true
    local commit
    commit="$(git rev-parse HEAD)"
    log "starting $NEURON_NAME at $(short HEAD): $PY $NEURON_SCRIPT ${NEURON_ARGS[*]-}"
    # HIVETRAIN_NEURON_COMMIT tells a later updater which code this neuron runs (see ensure_neuron).
    if ! env -u HIVETRAIN_UPDATER_NAME HIVETRAIN_NEURON_COMMIT="$commit" PYTHONUNBUFFERED=1 \
        "$PM2" start "$NEURON_SCRIPT" --name "$NEURON_NAME" --interpreter "$PY" --cwd "$REPO" \
        --time --kill-timeout 60000 --stop-exit-codes "$CONFIG_ERROR_EXIT" -- ${NEURON_ARGS[@]+"${NEURON_ARGS[@]}"} >/dev/null 9>&-; then
        log "ERROR: pm2 could not start $NEURON_NAME"
        return 1
    fi
}

# Leave a neuron that already runs this commit with these flags alone (the updater itself was
# restarted or re-executed); otherwise start it and report whether it comes up. A neuron that does
# not is reported, not fatal: the updater stays up to install the release that fixes it.
ensure_neuron() {
    local status restarts commit same code reason
    read -r status restarts commit same code reason < <(neuron_state)
    if [[ "$status" == online && "$commit" == "$(git rev-parse HEAD)" && "$same" == 1 ]]; then
        log "$NEURON_NAME already runs $(short HEAD) with these flags; leaving it running"
        return 0
    fi
    start_neuron || return
    wait_healthy || log "ERROR: $NEURON_NAME did not come up at $(short HEAD); see: pm2 logs $NEURON_NAME"
}

http_ok() { "$PY" -c "$PY_HTTP_OK" "$1"; }

# Poll until the freshly started neuron is up and has stayed up for HEALTH_STABLE seconds.
wait_healthy() {
    local deadline=$((SECONDS + HEALTH_TIMEOUT)) stable_since="" api_ok=0
    local status restarts commit same code reason
    [[ -z "$AXON_PORT" || "$AXON_PORT" == 0 ]] && api_ok=1
    while :; do
        read -r status restarts commit same code reason < <(neuron_state)
        if [[ "$status" == stopped && "$code" == "$CONFIG_ERROR_EXIT" ]]; then
            log "health: $NEURON_NAME stopped on a configuration error (exit code $CONFIG_ERROR_EXIT), so pm2 will not restart it: $reason"
            log "health: fix the neuron flags, then restart this updater (pm2 restart ${HIVETRAIN_UPDATER_NAME:-<updater>})"
            return 1
        fi
        if [[ "$status" == missing || "$status" == errored || "$status" == stopped || "$restarts" -gt 0 ]]; then
            log "health: $NEURON_NAME is not staying up (pm2 status $status, $restarts restarts); see: pm2 logs $NEURON_NAME"
            return 1
        fi
        if [[ "$status" == online ]]; then
            if ((!api_ok)) && http_ok "$AXON_PORT"; then
                api_ok=1
                log "health: /v1/status answers on port $AXON_PORT"
            fi
            if ((api_ok)); then
                stable_since="${stable_since:-$SECONDS}"
                if ((SECONDS - stable_since >= HEALTH_STABLE)); then
                    log "health: $NEURON_NAME is up"
                    return 0
                fi
            fi
        fi
        if ((SECONDS >= deadline)); then
            log "health: $NEURON_NAME not healthy after ${HEALTH_TIMEOUT}s (pm2 status $status, API ok: $api_ok)"
            return 1
        fi
        sleep 0.5
    done
}

# ----------------------------------------------------------------------------------------------
# One update at a time: flock when available (released by the kernel if we die), else mkdir.
# ----------------------------------------------------------------------------------------------

acquire_lock() {
    if command -v flock >/dev/null 2>&1; then
        exec 9>>"$STATE_DIR/lock"
        flock -n 9 && return 0
        exec 9>&-
        return 1
    fi
    if mkdir "$STATE_DIR/lock.d" 2>/dev/null; then
        echo $$ >"$STATE_DIR/lock.d/pid"
        return 0
    fi
    # A holder that died leaves the folder behind: take it over only when its pid is gone.
    local holder
    holder="$(cat "$STATE_DIR/lock.d/pid" 2>/dev/null || true)"
    if [[ -n "$holder" ]] && ! kill -0 "$holder" 2>/dev/null; then
        rm -rf "$STATE_DIR/lock.d"
        mkdir "$STATE_DIR/lock.d" 2>/dev/null && echo $$ >"$STATE_DIR/lock.d/pid" && return 0
    fi
    return 1
}

release_lock() {
    if command -v flock >/dev/null 2>&1; then
        exec 9>&-
    else
        rm -rf "$STATE_DIR/lock.d"
    fi
}

# ----------------------------------------------------------------------------------------------
# Update, health check, rollback
# ----------------------------------------------------------------------------------------------

# The same install as `make install`: the exact pins of requirements.txt (every peer of a swarm
# must run the same numerics), then the package itself, editable, without re-resolving its deps.
run_install() {
    if [[ -n "${HIVETRAIN_INSTALL_CMD:-}" ]]; then
        log "install: $HIVETRAIN_INSTALL_CMD"
        HIVETRAIN_PYTHON="$PY" bash -c "$HIVETRAIN_INSTALL_CMD" 9>&-
        return
    fi
    if [[ -f "$REPO/requirements.txt" ]]; then
        log "install: $PY -m pip install -r requirements.txt"
        "$PY" -m pip install --quiet -r "$REPO/requirements.txt" 9>&- || return
    fi
    log "install: $PY -m pip install --no-deps -e ."
    "$PY" -m pip install --quiet --no-deps -e "$REPO" 9>&-
}

# $1 commit to return to, $2 upstream commit being rejected, $3 why.
rollback() {
    log "ROLLBACK: $3; returning to $(short "$1")"
    echo "$2" >"$STATE_DIR/rejected"
    # Stop a crash-looping neuron first, so pm2 does not keep relaunching it while files change.
    pm2_run stop "$NEURON_NAME" >/dev/null 2>&1 || true
    # --keep moves the branch back but refuses to touch any local change; the tree was clean when
    # we fast-forwarded and the old commit is an ancestor, so nothing can be lost.
    if ! git reset --quiet --keep "$1"; then
        log "ERROR: could not return to $(short "$1") (git reset --keep refused); the checkout is left at $(short HEAD), fix it by hand"
        return 1
    fi
    run_install || log "WARNING: reinstalling $(short "$1") failed; see the output above"
    if start_neuron && wait_healthy; then
        log "rolled back to $(short "$1") ($(version_at HEAD)); $NEURON_NAME is up again"
    else
        log "ERROR: rolled back to $(short "$1") but $NEURON_NAME is still not healthy; see: pm2 logs $NEURON_NAME"
    fi
}

# Returns 0 when nothing had to be done, an update was skipped for a logged reason, or an update
# succeeded; 1 when an update was rolled back or could not be completed.
try_update() {
    local branch upstream head local_version upstream_version order
    branch="$BRANCH"
    if [[ -z "$branch" ]]; then
        branch="$(git symbolic-ref --quiet --short HEAD)" || {
            log "skip: the checkout is on a detached HEAD; check out a branch or pass --autoupdate.branch"
            return 0
        }
    fi
    if ! git fetch --quiet "$REMOTE" "refs/heads/$branch"; then
        log "skip: could not fetch $branch from $REMOTE (network down or no such branch?)"
        return 0
    fi
    upstream="$(git rev-parse FETCH_HEAD)"
    head="$(git rev-parse HEAD)"
    local_version="$(version_at HEAD)" || { log "skip: cannot read the local version"; return 0; }
    if [[ "$upstream" == "$head" ]]; then
        log "up to date: $local_version at $(short HEAD)"
        return 0
    fi
    upstream_version="$(version_at "$upstream")" || {
        log "skip: cannot read the version of $REMOTE/$branch ($(short "$upstream"))"
        return 0
    }
    order="$(semver_cmp "$upstream_version" "$local_version")" || {
        log "skip: cannot compare versions '$upstream_version' and '$local_version'"
        return 0
    }
    if ((order <= 0)); then
        log "no update: $REMOTE/$branch has $upstream_version, not newer than local $local_version"
        return 0
    fi
    if [[ "$(cat "$STATE_DIR/rejected" 2>/dev/null || true)" == "$upstream" ]]; then
        log "skip: $upstream_version ($(short "$upstream")) was rolled back before; waiting for a newer upstream commit"
        return 0
    fi
    if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
        log "skip: $upstream_version is available but the checkout has local changes; commit or stash them to get updates:"
        git status --short --untracked-files=no | sed 's/^/    /'
        return 0
    fi
    if ! git merge-base --is-ancestor HEAD "$upstream"; then
        log "skip: $upstream_version is available but $branch has local commits that are not on $REMOTE/$branch; not a fast-forward, nothing done"
        return 0
    fi

    log "updating $local_version -> $upstream_version ($(short HEAD) -> $(short "$upstream"))"
    # Written before the checkout moves, removed once the update is verified or undone: if we are
    # killed in between, the next start finds it and finishes the job (recover_interrupted_update).
    echo "$head $upstream" >"$STATE_DIR/updating"
    if ! git merge --quiet --ff-only "$upstream"; then
        rm -f "$STATE_DIR/updating"
        log "skip: the fast-forward failed (see git's message above); the checkout is unchanged"
        return 0
    fi
    finish_update "$head" "$upstream"
}

# Install, check, restart and verify the code now checked out ($2), or roll back to $1.
finish_update() {
    local previous="$1" upstream="$2" version rc=0
    version="$(version_at HEAD)"
    if ! run_install; then
        rollback "$previous" "$upstream" "install of $version failed"; rc=1
    elif ! "$PY" "$REPO/post_install.py" 9>&-; then
        rollback "$previous" "$upstream" "post_install.py of $version failed"; rc=1
    elif ! start_neuron || ! wait_healthy; then
        rollback "$previous" "$upstream" "$NEURON_NAME does not stay up on $version"; rc=1
    else
        log "updated to $version ($(short HEAD))"
    fi
    rm -f "$STATE_DIR/updating"
    return "$rc"
}

# An updater killed mid-update (pm2 restart, reboot) leaves the checkout on new code that was
# perhaps not installed or verified; finish that update before anything runs on it.
recover_interrupted_update() {
    [[ -f "$STATE_DIR/updating" ]] || return 0
    local previous upstream
    read -r previous upstream <"$STATE_DIR/updating"
    if [[ "$(git rev-parse HEAD)" == "$upstream" ]]; then
        log "an update to $(short "$upstream") was interrupted; finishing it"
        finish_update "$previous" "$upstream" || true
    else
        log "an update to $(short "$upstream") was interrupted before the checkout moved; nothing to finish"
        rm -f "$STATE_DIR/updating"
    fi
}

# Another updater sharing this checkout (say a validator next to a miner) may have moved HEAD:
# restart our neuron onto the code that is now on disk.
follow_checkout() {
    local status restarts commit same code reason
    read -r status restarts commit same code reason < <(neuron_state)
    if [[ "$status" == missing ]]; then
        log "warning: $NEURON_NAME is not in pm2 any more; restart this updater to start it again"
    elif [[ "$commit" != "$(git rev-parse HEAD)" ]]; then
        log "the checkout moved to $(short HEAD) outside this updater; restarting $NEURON_NAME"
        if ! start_neuron || ! wait_healthy; then
            log "ERROR: $NEURON_NAME is not healthy on $(short HEAD); see: pm2 logs $NEURON_NAME"
        fi
    fi
}

update_round() {
    if ! acquire_lock; then
        log "skip: another update of this checkout is in progress (lock $STATE_DIR/lock)"
        return 0
    fi
    local rc=0
    try_update || rc=$?
    ((rc != 0)) || follow_checkout
    release_lock
    return "$rc"
}

main() {
    ROLE="$1"
    shift
    ORIGINAL_ARGS=("$@")
    [[ "$ROLE" == miner || "$ROLE" == validator ]] || die "role must be miner or validator, got '$ROLE'"
    REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
    cd "$REPO"
    parse_args "$@"
    resolve_python
    resolve_pm2
    resolve_names
    STATE_DIR="$(cd "$(git rev-parse --git-common-dir)" && pwd -P)/hivetrain-autoupdate"
    mkdir -p "$STATE_DIR"
    local started_at
    started_at="$(git rev-parse HEAD)"
    log "hivetrain $(version_at HEAD) at $(short HEAD); neuron $NEURON_NAME; python $PY; pm2 $PM2"

    if acquire_lock; then
        recover_interrupted_update
        release_lock
    fi
    ensure_neuron || die "could not start $NEURON_NAME"
    if ((OFF)); then
        log "auto-update is off"
        ((ONCE)) && exit 0
        while :; do sleep 3600 & wait $!; done
    fi
    log "auto-update: $REMOTE ${BRANCH:-(current branch)} every ${INTERVAL}s"
    while :; do
        local rc=0
        update_round || rc=$?
        ((ONCE)) && exit "$rc"
        if [[ "$(git rev-parse HEAD)" != "$started_at" ]]; then
            log "restarting the updater from the new code"
            exec bash "$REPO/run_$ROLE.sh" "${ORIGINAL_ARGS[@]}"
        fi
        sleep "$INTERVAL"
    done
}

# Everything above is only definitions; bash has parsed the whole file before main runs, so a pull
# that rewrites this file while it runs cannot change the code being executed.
main "$@"
exit

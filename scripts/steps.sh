# Sourced by the test, lint and cross scripts: `step NAME` ends the step
# before it (printing how many seconds it took) and starts NAME. When
# LATENTCAM_STEP_LOG names a file (.ci/run sets it), each finished step
# appends "<seconds>\t<cpu seconds>\t<name>" to it, so the CI run ends with
# a table of every step's time that a note can quote.
#
# CPU seconds are the user + system time of the processes the step ran and
# waited for (cargo, rustc, the tests), read from the script's own
# /proc/<pid>/stat (cutime, cstime): on 2 cores a step can show up to twice
# its wall seconds. Work running in the background is counted by the step
# that waits for it.
#
# LATENTCAM_STEP_TAG, when set, goes before every step's name (test.sh tags
# the steps it runs in the background, whose seconds overlap others').
#
# A script that sources this ends its last step itself with `step_end`, or
# lets the EXIT trap set here do it (also on failure, so the table shows
# where the time went and which step failed).

_step_name=""
_step_start=0
_step_cpu_start=0
_step_ticks=$(getconf CLK_TCK)

# The CPU time, in clock ticks, of the script's finished children ($$, not
# $BASHPID: this runs in a command substitution's subshell).
_step_children_ticks() {
    local stat f
    read -r stat <"/proc/$$/stat"
    # The fields after the command name, which is in parentheses and may
    # contain spaces: state is the 3rd field, cutime the 16th, cstime the 17th.
    read -r -a f <<<"${stat##*) }"
    echo $((f[13] + f[14]))
}

step_end() {
    [ -n "$_step_name" ] || return 0
    local seconds=$(($(date +%s) - _step_start))
    local cpu=$((($(_step_children_ticks) - _step_cpu_start + _step_ticks / 2) / _step_ticks))
    printf '==> %s: %ss (CPU %ss)\n' "$_step_name" "$seconds" "$cpu"
    if [ -n "${LATENTCAM_STEP_LOG:-}" ]; then
        printf '%s\t%s\t%s\n' "$seconds" "$cpu" "$_step_name" >>"$LATENTCAM_STEP_LOG"
    fi
    _step_name=""
}

step() {
    step_end
    _step_name="${LATENTCAM_STEP_TAG:-}$*"
    _step_start=$(date +%s)
    _step_cpu_start=$(_step_children_ticks)
    printf '\n==> %s\n' "$_step_name"
}

# On the way out, a failure is named in the table too.
steps_exit() {
    local status="$1"
    if [ "$status" != 0 ] && [ -n "$_step_name" ]; then
        _step_name="$_step_name (FAILED, exit $status)"
    fi
    step_end
}
trap 'steps_exit $?' EXIT

# stop_tree PID: ends a background job and everything it started (cargo,
# rustc), for the scripts that run builds beside their tests.
stop_tree() {
    local child
    for child in $(pgrep -P "$1"); do stop_tree "$child"; done
    kill "$1" 2>/dev/null || true
}

# Step timings for the test command's table (sourced by scripts/*.sh).
#   timed NAME CMD...    runs CMD; appends "NAME<TAB>seconds<TAB>status" to $HAKO_TIMINGS (if set)
#   timing_table         prints the table of $HAKO_TIMINGS, in the order the steps ended
#                        (indented lines are parts of the next unindented one)
#   timed_sections PREFIX  a filter: passes cargo test's output through and records one line
#                        per test binary (from its "Running"/"Doc-tests" line to the next)

timing_record() { # NAME SECONDS STATUS
    [ -n "${HAKO_TIMINGS:-}" ] && printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$HAKO_TIMINGS"
    return 0
}

elapsed_since() { # START (an $EPOCHREALTIME)
    LC_ALL=C awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

timed() {
    local name="$1" start=$EPOCHREALTIME status=0
    shift
    "$@" || status=$?
    timing_record "$name" "$(elapsed_since "$start")" "$status"
    return "$status"
}

timed_sections() {
    local prefix="$1" name="" start="" line
    while IFS= read -r line; do
        printf '%s\n' "$line"
        case "$line" in
            *"     Running "*|*"   Doc-tests "*)
                [ -n "$name" ] && timing_record "$prefix $name" "$(elapsed_since "$start")" "-"
                # "Running unittests src/lib.rs (target/release/deps/hako_vmm-0123abcd)"
                # -> "unittests src/lib.rs [hako_vmm]"; "Doc-tests hako_vmm" -> "doc-tests hako_vmm"
                name="$(printf '%s' "$line" | sed -E 's/^ *Doc-tests +/doc-tests /;
                    s/^ *Running +//; s/ \(.*\/([^/]*)-[0-9a-f]+\)$/ [\1]/')"
                start=$EPOCHREALTIME
                ;;
        esac
    done
    [ -n "$name" ] && timing_record "$prefix $name" "$(elapsed_since "$start")" "-"
    return 0
}

timing_table() {
    [ -n "${HAKO_TIMINGS:-}" ] && [ -s "$HAKO_TIMINGS" ] || return 0
    echo "== timings (wall clock, seconds)"
    LC_ALL=C awk -F'\t' '{
        printf "%-62s %8.1f  %s\n", $1, $2, ($3 == "0" || $3 == "-") ? "" : "exit " $3
    }' "$HAKO_TIMINGS"
}

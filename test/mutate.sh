#!/usr/bin/env bash
# Mutation testing of the durable path (make mutate): gremlins mutates one
# file at a time and runs, per mutant, the tests listed for that file; the
# score of a package is killed / (killed + lived) over its files.
#
# Gremlins runs its package's whole test suite per mutant and cannot pick
# files to include, so this script excludes every other file of the package
# and narrows `go test` with -run/-skip (GOFLAGS): the whole suites would take
# hours on a 2-core machine. Settings (workers, per-mutant timeout, mutant
# kinds) are in .gremlins.yaml. Results: $MUTATE_OUT (default run/mutate, git-ignored).
set -euo pipefail

GREMLINS=${GREMLINS:-"${GO:-go} run github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0"}
OUT=${MUTATE_OUT:-run/mutate}
ROOT=$(pwd)
CONFIG=${MUTATE_CONFIG:-$ROOT/.gremlins.yaml}
ONLY=${MUTATE_ONLY:-.} # e.g. MUTATE_ONLY=gateway/commit.go: only the rows matching it

# package  file  tests run against its mutants (-run)  tests skipped (-skip, - for none)
TABLE='
gateway     commit.go    ^(TestCommit|TestSubmitAfterClose|TestGroupCommit|TestAtomicCommit|TestAtomicFrom|TestCommitQueue|TestAckPast|TestAckTimeout|TestStoredButAckLost|TestPublishStoresPayload|TestSameKeyOtherMessage|TestBusUnavailable|TestBatchOneBadLine)  -
gateway     publish.go   ^(TestPublish|TestBadRequests|TestMetadataBounds|TestPayloadAtTheLimit|TestSameKeyOtherMessage|TestErrorStatusesAreProblems|TestStoredButAckLost|TestBusUnavailable|TestClassify|TestShedsBeyondInFlight|TestClientRate|TestStreamFullExhaustsStaleCredit|TestAckPast|TestAckTimeout)  -
gateway     commit_queue.go  ^(TestCommitQueue|TestCommitsInFlightBoundAndKeyOrder|TestGroupCommit)  -
gateway     outcome.go   ^(TestClassify|TestStoredButAckLost|TestBusUnavailable|TestPublishTimeoutIsNeverSuccess|TestAckPast|TestAckTimeout)  -
gateway     door.go      ^(TestErrorStatusesAreProblems|TestClientRate|TestTenantAdmissionShare|TestShedsBeyondInFlight|TestStreamFullExhaustsStaleCredit|TestRedrive)  -
gateway     settle.go    ^(TestMissingFamily|TestFamilyDeleted|TestRedriveWithFamilyMissing|TestDuplicateProved|TestPublishStoresPayload|TestSubmitAfterClose|TestCommitKeeps)  -
gateway     interest.go  ^(TestMissingFamily|TestFamilyDeleted|TestRedriveWithFamilyMissing|TestDuplicateProved|TestPublishStoresPayload)  -
pkg/sluice  producer.go  ^(TestProducer|TestPublishBatch|TestRetryOptions|ExampleProducer)  -
pkg/sluice  producer_options.go  ^(TestProducer|TestRetryOptions|ExampleProducer)  -
pkg/sluice  worker.go    .  ^(TestProducer|TestPublishBatch|TestRetryOptions|ExampleProducer)
pkg/sluice  handle.go    .  ^(TestProducer|TestPublishBatch|TestRetryOptions|ExampleProducer)
broker      provision.go ^(TestProvision|TestReconcile|TestIncompatible|TestNewRefusesBadConfig|TestSyncAlways|TestAckExpiry|TestCrashedAttempt|TestDeletedFamily|TestUnusableFamily|TestAddedFamily|TestClusterProvisionsR3)  -
'

# A row run again replaces its results; the table at the end adds up every
# row's last results in $OUT (MUTATE_ONLY reruns a few rows).
mkdir -p "$OUT"
start=$(date +%s)
while read -r pkg file run skip; do
	[ -n "$pkg" ] || continue
	[[ $pkg/$file =~ $ONLY ]] || continue
	if [ ! -f "$pkg/$file" ]; then
		echo "== $pkg/$file: no such file, skipped"
		rm -f "$OUT/${pkg//\//_}_${file%.go}".*
		continue
	fi
	# Keep only $file: exclude the package's other sources and its subpackages
	# (gremlins matches paths relative to the package directory).
	excl=(-E /)
	for f in "$pkg"/*.go; do
		f=${f##*/}
		case $f in *_test.go | "$file") continue ;; esac
		excl+=(-E "^${f//./\\.}\$")
	done
	# vet off: it would run again for every mutant. -trimpath: builds in
	# gremlins' copies of the module share the build cache with this one.
	flags="-count=1 -vet=off -trimpath -run=$run"
	[ "$skip" = - ] || flags="$flags -skip=$skip"
	name=${pkg//\//_}_${file%.go}
	rm -f "$OUT/$name".*
	echo "== $pkg/$file ($(date +%T)): go test $flags"
	# The per-mutant timeout is a multiple of gremlins' coverage run: build
	# what it needs first, so that it is timed warm, as mutants then are
	# (each rebuilds only its package).
	GOFLAGS="$flags" ${GO:-go} test -cover -run='^$' "./$pkg/..." >/dev/null
	# Each run of gremlins gathers coverage with the same tests first: only
	# covered mutants run. Its exit status is ignored (no thresholds).
	# A test that fails in the coverage run stops gremlins: once more, in
	# case it was a flake of the loaded machine.
	for try in 1 2; do
		GOFLAGS="$flags" $GREMLINS unleash --config "$CONFIG" "${excl[@]}" -o "$OUT/$name.json" "$ROOT/$pkg" >"$OUT/$name.log" 2>&1 || true
		grep -q 'failed to gather coverage' "$OUT/$name.log" || break
		grep -E '^(--- FAIL|\s+--- FAIL|\s+\S+_test.go:[0-9]+:)' "$OUT/$name.log" | grep -v logger.go | head -5
	done
	grep -E 'LIVED|TIMED OUT|Killed:|Timed out:|efficacy|failed|error' "$OUT/$name.log" | sed 's/\x1b\[[0-9;]*m//g' || true
done <<<"$TABLE"

# Per-package score from gremlins' JSON results.
set +o pipefail # grep finding nothing is a count of 0
count() { grep -o "\"$1\":[0-9]*" "$2" | head -1 | cut -d: -f2; }
status() { grep -o "\"status\":\"$1\"" "$2" | wc -l; }
echo
echo "Mutation score per package ($(($(date +%s) - start)) s): killed / (killed + lived); timed out and not covered apart"
printf '%-12s %7s %6s %10s %12s %11s %7s\n' package killed lived timed_out not_covered not_viable score
for pkg in $(awk 'NF {print $1}' <<<"$TABLE" | uniq); do
	k=0 l=0 t=0 n=0 v=0
	for j in "$OUT/${pkg//\//_}"_*.json; do
		[ -s "$j" ] || continue
		k=$((k + $(count mutants_killed "$j"))) l=$((l + $(count mutants_lived "$j")))
		n=$((n + $(count mutants_not_covered "$j"))) v=$((v + $(count mutants_not_viable "$j")))
		t=$((t + $(status 'TIMED OUT' "$j")))
	done
	score=n/a
	[ $((k + l)) -eq 0 ] || score=$(awk -v k=$k -v l=$l 'BEGIN {printf "%.1f%%", 100 * k / (k + l)}')
	printf '%-12s %7d %6d %10d %12d %11d %7s\n' "$pkg" $k $l $t $n $v "$score"
done

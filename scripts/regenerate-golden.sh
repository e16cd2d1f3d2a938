#!/usr/bin/env bash
# Regenerates the golden vectors in Tests/WatermarkingTests/Golden (v1.json, v1-householder.json, v2.json).
#
# Only for a deliberate format change (a new format version): marks already released are detected only while
# these vectors hold. The test run that rewrites them fails on purpose ("vectors rewritten; review the diff");
# review `git diff Tests/WatermarkingTests/Golden`, then run the tests again normally.
set -uo pipefail
cd "$(dirname "$0")/.."
WEIGHTMARK_WRITE_GOLDEN=1 swift test -c release --filter 'GoldenVectorTests|GoldenHouseholderTests|GoldenV2Tests'
echo
git --no-pager diff --stat -- Tests/WatermarkingTests/Golden
echo "Golden vectors rewritten (the run above fails by design). Review the diff before committing."

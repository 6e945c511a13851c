#!/usr/bin/env bash
# The whole FreeTumor pipeline on the embedded phantom dataset, with the real nnU-Net commands (CPU, 2 cores).
#
#   make demo            (creates the environment first), or, inside the environment:  bash scripts/demo.sh
#
# Everything goes to $FREETUMOR_DEMO_DIR (default ./demo_work): nnUNet_raw, nnUNet_preprocessed, nnUNet_results,
# predictions/ and the evaluation summaries. Re-running skips the steps whose outputs exist.
# Knobs (environment): DEMO_EPOCHS (6), DEMO_ITERS (15) iterations per epoch, DEMO_GEN_STEPS (100) generator steps, DEMO_DEVICE (cpu).
# The schedule is far too short for good models: the demo shows the pipeline and its outputs, not the method's
# benefit (python -m benchmarks.compare measures that).
set -euo pipefail

work=$(mkdir -p "${FREETUMOR_DEMO_DIR:-demo_work}" && cd "${FREETUMOR_DEMO_DIR:-demo_work}" && pwd)
export nnUNet_raw="$work/nnUNet_raw" nnUNet_preprocessed="$work/nnUNet_preprocessed" nnUNet_results="$work/nnUNet_results"
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-2}
device=${DEMO_DEVICE:-cpu}
id=901
ds=Dataset901_FreeTumorDemo
# short schedules for every trainer of this demo (read by the plugin's trainers only)
export nnUNet_freetumor_epochs=${DEMO_EPOCHS:-6} nnUNet_freetumor_iters=${DEMO_ITERS:-15} nnUNet_freetumor_val_iters=5
train_env=(env "nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-2}")
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t0=$(date +%s)

step "1/7 phantom dataset ($nnUNet_raw/$ds)"
if [ ! -f "$nnUNet_raw/$ds/dataset.json" ]; then
  freetumor_make_demo_dataset -d $id
else
  echo "exists"
fi

step "2/7 nnUNetv2_plan_and_preprocess"
if [ ! -f "$nnUNet_preprocessed/$ds/nnUNetPlans.json" ]; then
  nnUNetv2_plan_and_preprocess -d $id -c 3d_fullres --verify_dataset_integrity -npfp 2 -np 2
fi
# the demo's quality gate is the short baseline below (real runs: the default nnUNetTrainer baseline)
freetumor_config -d $id --gate_trainer nnUNetTrainerBaseline --write | tail -n 1

train() {  # trainer
  if [ ! -f "$nnUNet_results/$ds/${1}__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth" ]; then
    "${train_env[@]}" nnUNetv2_train $id 3d_fullres 0 -tr "$1" -device "$device"
  else
    echo "$1: trained"
  fi
}

step "3/7 baseline nnU-Net (also the frozen segmenter S of the quality gate)"
train nnUNetTrainerBaseline

step "4/7 nnU-Net + handcrafted synthetic tumors (SyntheticTumors recipe)"
train nnUNetTrainerHandcraftedTumor

step "5/7 FreeTumor generator (GAN + segmentation-guided loss)"
gen="$nnUNet_results/$ds/FreeTumorGenerator__nnUNetPlans__3d_fullres/fold_0"
if [ ! -f "$gen/generator_final.safetensors" ]; then
  freetumor_train_generator $id -f 0 --steps "${DEMO_GEN_STEPS:-100}" --monitor_every 25 --device "$device"
fi

step "6/7 nnU-Net + FreeTumor online synthesis with the quality gate"
train nnUNetTrainerFreeTumor

step "7/7 predict the test cases and evaluate"
for tr in nnUNetTrainerBaseline nnUNetTrainerHandcraftedTumor nnUNetTrainerFreeTumor; do
  out="$work/predictions/$tr"
  if [ ! -f "$out/summary_freetumor.json" ]; then
    nnUNetv2_predict -i "$nnUNet_raw/$ds/imagesTs" -o "$out" -d $id -c 3d_fullres -f 0 -tr "$tr" -device "$device" \
      -npp 1 -nps 1
    nnUNetv2_evaluate_folder "$nnUNet_raw/$ds/labelsTs" "$out" -djfile "$out/dataset.json" -pfile "$out/plans.json" \
      >/dev/null
    freetumor_evaluate "$out" "$nnUNet_raw/$ds/labelsTs" -d $id >/dev/null
  fi
done
python - "$work" <<'PY'
import json, sys
from pathlib import Path
from nnunet_freetumor.evaluation.report import comparison_table
work = Path(sys.argv[1])
trainers = ("nnUNetTrainerBaseline", "nnUNetTrainerHandcraftedTumor", "nnUNetTrainerFreeTumor")
print("\n" + comparison_table({t: json.loads((work / "predictions" / t / "summary_freetumor.json").read_text())
                               for t in trainers}))
PY

ds_res="$nnUNet_results/$ds"
cat <<EOF

Done in $(( $(date +%s) - t0 )) s. Where to look:
  training logs, progress.png, freetumor_stats.json (candidates / synthesized / accepted per epoch):
      $ds_res/<trainer>__nnUNetPlans__3d_fullres/fold_0/
  synthesized crops (image + mask outline):
      $ds_res/nnUNetTrainerHandcraftedTumor__nnUNetPlans__3d_fullres/fold_0/synthesis_epoch_*.png
      $ds_res/nnUNetTrainerFreeTumor__nnUNetPlans__3d_fullres/fold_0/synthesis_epoch_*.png (accepted / rejected)
  generator: $gen/ (progress.png, montage_step_*.png, generator_final.safetensors + .json)
  predictions and evaluations: $work/predictions/<trainer>/ (summary.json: nnU-Net, summary_freetumor.md: lesions)
EOF

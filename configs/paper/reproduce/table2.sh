# Table 2: four architectures on VoxCeleb2, each trained with the encoder frozen and then continued three ways:
# LMFT straight away ("+ LMFT (Joint Fine-tuning)"), joint fine-tuning, and LMFT after joint fine-tuning.
export VOX_TRAIN_DIR=$VOX2_TRAIN_DIR
E=$SVLIB_HOME/exp/paper/table2
V="--wav-scp $D/vox1/vox1/wav.scp --trials $D/vox1/trials/Vox1-O --test-name vox1-o --json"
for model in ECAPA-TDNN:wavg_ecapa MFA:mfa Adapter_MFA:adapter_mfa LoRA_Adapter_MFA:lora_adapter_mfa; do
  system=${model%%:*} head=${model#*:}
  s1=configs/paper/table2/$head.yaml                      # stage 1 with this head, the encoder frozen
  if [ $head = lora_adapter_mfa ]; then s1=configs/paper/s1_freeze.yaml; fi   # ... and with LoRA
  torchrun --nproc_per_node 8 -m svlib train --config $s1 -o exp_dir=$E/$head
  torchrun --nproc_per_node 8 -m svlib train --config configs/paper/s3_lmft.yaml \
      -o init_from=$E/$head -o exp_dir=$E/${head}_lmft
  torchrun --nproc_per_node 8 -m svlib train --config configs/paper/s2_joint.yaml \
      -o init_from=$E/$head -o exp_dir=$E/${head}_joint
  torchrun --nproc_per_node 8 -m svlib train --config configs/paper/s3_lmft.yaml \
      -o init_from=$E/${head}_joint -o exp_dir=$E/${head}_joint_lmft
  for run in $head:s1_freeze ${head}_lmft:s3_lmft_after_s1 ${head}_joint:s2_joint ${head}_joint_lmft:s3_lmft; do
    svlib score --model $E/${run%%:*}/model $V --system $system --stage ${run#*:} --train-name vox2
  done
done
# VoxCeleb2 & VoxBlink2 block: stages 1-3 are Table 1's models; "+ LMFT (Joint Fine-tuning)" is new
T1=$SVLIB_HOME/exp/paper/lora_adapter_mfa
torchrun --nproc_per_node 8 -m svlib train --config configs/paper/s3_lmft.yaml \
    -o init_from=$T1/s1_freeze -o exp_dir=$E/vb2_lora_adapter_mfa_lmft
svlib score --model $T1/s1_freeze/model $V --system LoRA_Adapter_MFA --stage s1_freeze --train-name vox2+vb2
svlib score --model $E/vb2_lora_adapter_mfa_lmft/model $V --system LoRA_Adapter_MFA --stage s3_lmft_after_s1 \
    --train-name vox2+vb2
# CN-Celeb block: Adapter_MFA and LoRA_Adapter_MFA trained on CN-Celeb1&2 (no VoxCeleb2 speakers, so every speaker
# is speed-perturbed), stages 1 and 2, scored on CN-Celeb's test set with averaged enrollments
export VOX_TRAIN_DIR=$D/cnceleb
CN=$SVLIB_HOME/exp/paper/cnceleb
C="--wav-scp $D/cn1/eval/wav.scp --trials $D/cn1/trials/CN-Celeb1 --enroll-map $D/cn1/eval/enroll.map"
for model in Adapter_MFA:configs/paper/table2/adapter_mfa.yaml LoRA_Adapter_MFA:configs/paper/s1_freeze.yaml; do
  system=${model%%:*} s1=${model#*:}
  torchrun --nproc_per_node 8 -m svlib train --config $s1 -o exp_dir=$CN/$system -o speed_perturb_speakers=null
  torchrun --nproc_per_node 8 -m svlib train --config configs/paper/s2_joint.yaml \
      -o init_from=$CN/$system -o exp_dir=$CN/${system}_joint -o speed_perturb_speakers=null
  svlib score --model $CN/$system/model $C --system $system --stage s1_freeze --train-name cnceleb \
      --test-name cnceleb --json
  svlib score --model $CN/${system}_joint/model $C --system $system --stage s2_joint --train-name cnceleb \
      --test-name cnceleb --json
done

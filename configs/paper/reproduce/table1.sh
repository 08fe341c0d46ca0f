# Table 1: LoRA_Adapter_MFA trained on VoxCeleb2 + VoxBlink2 (speed perturbation of VoxCeleb2's speakers only),
# scored by cosine, AS-norm and AS-norm + QMF; the cohort is VoxCeleb2-dev (WeSpeaker's recipe, top-300).
export VOX_TRAIN_DIR=$D/vox2_vb2
torchrun --nproc_per_node 8 -m svlib train --config configs/paper/s1_freeze.yaml
torchrun --nproc_per_node 8 -m svlib train --config configs/paper/s2_joint.yaml
torchrun --nproc_per_node 8 -m svlib train --config configs/paper/s3_lmft.yaml
for stage in s2_joint s3_lmft; do               # Table 1's rows without and with LMFT
  for t in Vox1-O Vox1-E Vox1-H; do             # the embeddings are cached: each list reuses them
    torchrun --nproc_per_node 8 -m svlib score --model $SVLIB_HOME/exp/paper/lora_adapter_mfa/$stage/model \
        --wav-scp $D/vox1/vox1/wav.scp --trials $D/vox1/trials/$t --asnorm --qmf --cohort-dir $VOX2_TRAIN_DIR \
        --cache-dir $SVLIB_HOME/exp/paper/embeddings/$stage --system LoRA_Adapter_MFA --test-name ${t,,} --json
  done
done

# Table 3: distillation-guided structured pruning of Table 1's jointly fine-tuned encoder (the teacher), then the
# three SV stages again on the pruned encoder.
export VOX_TRAIN_DIR=$D/vox2_vb2
torchrun --nproc_per_node 8 -m svlib prune --config configs/paper/prune/p1_prune.yaml    # distill + prune
torchrun --nproc_per_node 8 -m svlib prune --config configs/paper/prune/p2_distill.yaml  # distill the pruned model
for s in s1_freeze s2_joint s3_lmft; do                     # the SV stages on the pruned encoder
  torchrun --nproc_per_node 8 -m svlib train --config configs/paper/prune/$s.yaml
done
for s in s2_joint s3_lmft; do                               # Table 3's EER without and with LMFT
  svlib score --model $SVLIB_HOME/exp/paper/pruned/$s/model --wav-scp $D/vox1/vox1/wav.scp --trials $D/vox1/trials/Vox1-O \
      --system LoRA_Adapter_MFA-pruned80 --test-name vox1-o --json
done
svlib params --structure $SVLIB_HOME/exp/paper/pruned/p1_prune/structure.json   # Table 3's params, MACs, FLOPs for 1 s

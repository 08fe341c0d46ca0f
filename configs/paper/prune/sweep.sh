# Sparsity sweep (beyond the paper; the chapter "Deployment and speed"): Table 3's chain at 50, 70 and 90 % target
# sparsity, each into its own exp/paper/pruned<NN>/. Stage 1 has its own file (p1_prune_<NN>.yaml: the target); the
# other stages are the 80 % files with their folders moved by overrides. Run after table3.sh's teacher exists, with the
# variables of configs/paper/reproduce/data.sh set ($D the data root).
export VOX_TRAIN_DIR=$D/vox2_vb2
for t in 50 70 90; do
  e=$SVLIB_HOME/exp/paper/pruned$t
  torchrun --nproc_per_node 8 -m svlib prune --config configs/paper/prune/p1_prune_$t.yaml
  torchrun --nproc_per_node 8 -m svlib prune --config configs/paper/prune/p2_distill.yaml \
      -o name=pruned${t}_p2_distill -o exp_dir=$e/p2_distill -o init_from=$e/p1_prune
  torchrun --nproc_per_node 8 -m svlib train --config configs/paper/prune/s1_freeze.yaml \
      -o name=pruned${t}_s1_freeze -o exp_dir=$e/s1_freeze -o init_from=$e/p2_distill
  torchrun --nproc_per_node 8 -m svlib train --config configs/paper/prune/s2_joint.yaml \
      -o name=pruned${t}_s2_joint -o exp_dir=$e/s2_joint -o init_from=$e/s1_freeze
  torchrun --nproc_per_node 8 -m svlib train --config configs/paper/prune/s3_lmft.yaml \
      -o name=pruned${t}_s3_lmft -o exp_dir=$e/s3_lmft -o init_from=$e/s2_joint
  svlib score --model $e/s3_lmft/model --wav-scp $D/vox1/vox1/wav.scp --trials $D/vox1/trials/Vox1-O \
      --system LoRA_Adapter_MFA-pruned$t --test-name vox1-o --json
  svlib params --structure $e/p1_prune/structure.json
done

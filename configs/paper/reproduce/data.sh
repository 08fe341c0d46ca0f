# Data preparation (§3.1): Kaldi data directories (wav.scp, utt2spk, spk2utt) and Kaldi-format trial lists.
# CORPORA is the folder that holds the corpora in their usual layouts (see svlib.data.prepare). Run from the svlib
# checkout (the commands read configs/paper/); experiments and data go to SVLIB_HOME, by default this folder.
export SVLIB_HOME=${SVLIB_HOME:-$PWD}
C=${CORPORA:-/corpora}
D=$SVLIB_HOME/data/paper
svlib data prepare voxceleb1 --root $C/voxceleb1/dev --root $C/voxceleb1/test --out $D/vox1 \
    --trials $C/voxceleb1/veri_test2.txt $C/voxceleb1/list_test_all2.txt $C/voxceleb1/list_test_hard2.txt
svlib data prepare voxceleb2 --root $C/voxceleb2 --out $D/vox2               # -> $D/vox2/vox2_dev
svlib data prepare voxblink2 --root $C/voxblink2 --out $D/vb2 --durations    # -> $D/vb2/voxblink2
svlib data prepare cnceleb1 --root $C/CN-Celeb1 --out $D/cn1                 # -> train, eval, trials/CN-Celeb1
svlib data prepare cnceleb2 --root $C/CN-Celeb2 --out $D/cn2                 # -> $D/cn2/cnceleb2
svlib data combine --out $D/vox2_vb2 $D/vox2/vox2_dev $D/vb2/voxblink2       # Table 1's training set
svlib data combine --out $D/cnceleb $D/cn1/train $D/cn2/cnceleb2             # the CN-Celeb systems' training set
export W2V_BERT_2_0=${W2V_BERT_2_0:-/models/w2v-bert-2.0}   # a local copy of facebook/w2v-bert-2.0
export MUSAN_DIR=$C/musan RIRS_NOISES_DIR=$C/RIRS_NOISES
export VOX2_TRAIN_DIR=$D/vox2/vox2_dev   # LMFT's training set, the speakers that get speed perturbation, the cohort

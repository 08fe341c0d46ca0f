# Tables 1-3: the paper's numbers next to those of every run recorded above
svlib book tables --ours

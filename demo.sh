#!/bin/sh
# The whole job at toy size on the synthetic dataset, on the CPU in a few minutes: search a cell, retrain
# the cell found, test the trained weights, draw the cell and the search's history. Everything lands in
# demo-YYYYMMDD-HHMMSS/; each line below is a command to copy and grow.
set -e
cd "$(dirname "$0")"
out="demo-$(date +%Y%m%d-%H%M%S)"
data="--dataset synthetic --image_size 16 --init_channels 8 --layers 5"

python train_search.py $data --synthetic_train_size 1024 --batch_size 32 --epochs 3 --exp_path "$out/search"
python train.py $data --arch_path "$out/search/genotype.json" --epochs 3 --exp_path "$out/eval"
python test.py --model_path "$out/eval/weights.pt"
python visualize.py --history "$out/search" --outdir "$out/history"
if command -v dot >/dev/null 2>&1; then
    python visualize.py "$out/search/genotype.json" --format png --outdir "$out/cell"
else
    echo "Graphviz's dot program is not installed, so the cell was not drawn; install it (apt-get install graphviz," \
         "brew install graphviz or conda install graphviz) and run: python visualize.py $out/search/genotype.json"
fi
echo "demo finished: everything is in $out/"

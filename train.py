"""python train.py -opt options/derain.yml  (see drcnet/train.py)."""
import sys

from drcnet.train import main

if __name__ == '__main__':
    sys.exit(main())

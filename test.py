"""python test.py -opt options/test/derain.yml  (see drcnet/test.py)."""
import sys

from drcnet.test import main

if __name__ == '__main__':
    sys.exit(main())

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# requirements.txt's lines without their comments
requirements = [line.split('#')[0].strip() for line in (here / 'requirements.txt').read_text().splitlines()
                if line.split('#')[0].strip()]
version = next(line.split("'")[1] for line in (here / 'drcnet' / '__init__.py').read_text().splitlines()
               if line.startswith('__version__'))

setup(
    name='drcnet',
    version=version,
    description='DRCNet (ECCV 2022) image restoration: deraining, denoising, deblurring, on basicsr',
    long_description=(here / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.9',
    packages=find_packages(include=['drcnet', 'drcnet.*']),
    install_requires=requirements,
    extras_require={'test': ['pytest>=7']},
    entry_points={'console_scripts': [
        'drcnet-train=drcnet.train:main',
        'drcnet-test=drcnet.test:main',
        'drcnet-infer=drcnet.infer:main',
    ]},
)

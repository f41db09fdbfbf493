"""cyclejax: CycleGAN (Zhu, Park, Isola, Efros, ICCV 2017) in JAX and Flax."""

__version__ = "0.1.0"

"""Calibration and bit allocation: activation Hessians (:mod:`hessian`), GPTQ and LQER
(:mod:`gptq`, :mod:`lqer`), per-tensor sensitivity, the roles and bits each tensor gets
(:mod:`allocation`), rate-distortion allocation (:mod:`rdalloc`) and the compressed
segment groups the grouped schemes store (:mod:`groups`)."""

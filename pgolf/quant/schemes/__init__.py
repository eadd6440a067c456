"""The quantization schemes: TurboQuant (:mod:`turbo`, its rate-distortion variant
:mod:`turbo_rd`), the record's GPTQ + LQER storage (:mod:`record`), row-wise int6/int8
(:mod:`rowint`), the codebooks and rotations they share, the storage kinds of the header
(:mod:`kinds`), the grouped segment storage of record/turbo-rd (:mod:`grouped`, loaded
through :mod:`pgolf.features`) and fake quantization for QAT (:mod:`qat`, :mod:`qat_grids`)."""

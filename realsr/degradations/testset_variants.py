"""The names of the papers' eight test-set degradations (``LR_degra/<name>`` folders), apart from
:mod:`realsr.degradations.testset_protocol` so that option files naming them (``datasets_grid``)
are checked without loading OpenCV. The misspelling ``jepg`` is the papers' own folder name."""

VARIANTS = (
    'bicubic',
    'blur2_bicubic',
    'bicubic_noise20',
    'bicubic_jepg50',
    'blur2_bicubic_noise20',
    'blur2_bicubic_jepg50',
    'bicubic_noise20_jepg50',
    'blur2_bicubic_noise20_jepg50',
)

"""Layer zoo: what each model is -- ModelSpec and its registry (one registration per variant), checkpoint
loading, the model factory, seeded sample inputs for checks, UDVD degradation maps. Uses models_src.

May import: imaging, util, errors, models_src."""

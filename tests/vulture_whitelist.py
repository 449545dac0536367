"""Names that vulture cannot see being used, for `vulture --min-confidence 60 *.py tests/vulture_whitelist.py`
(run by tests/test_code_health.py). This file is read, never run."""
# Framework hooks: pickle.Unpickler calls find_class; torch reads cudnn.benchmark.
_.find_class
_.benchmark
# Search methods reach train_search.py through methods.REGISTRY, filled by their @register decorator.
EdgeNormalization, AlphaDARTS, AttDARTS, DiscretizationAware, DA2S, BetaDecay, SmoothDARTS, AuxiliarySkip, FairDARTS
GDAS, DirichletSampling, CostPenalty, ProgressiveStages
# Parameters of hook signatures whose default leaves them unused.
loss_of, exc_info

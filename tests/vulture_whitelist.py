"""Names that vulture cannot see being used, for `vulture --min-confidence 60 *.py tests/vulture_whitelist.py`
(run by tests/test_code_health.py). This file is read, never run."""
# Framework hooks: pickle.Unpickler calls find_class; torch reads cudnn.benchmark.
_.find_class
_.benchmark
# Parameters of hook signatures whose default leaves them unused.
loss_of, exc_info

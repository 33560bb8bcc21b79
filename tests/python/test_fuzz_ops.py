"""Property fuzzing of every op: random sizes (zeros included) and one or two mutations of a
valid call (dtype, shape, strides, NaN / inf, None, out-of-range numbers, lists of the wrong
length). Each op must give a right result (shapes as its fake kernel says, NaN / inf as the
float reference) or a clear ValueError / TypeError, and never crash: cases run in a worker
process, so a crash fails the test with the case that caused it.

FASTDECODE_FUZZ_EXAMPLES sets the examples per op (default 120 here; `make fuzz` runs more
with a random seed). The worker honours LD_PRELOAD, so `make test-asan` runs these cases
under AddressSanitizer too.
"""
import os

import pytest
from fuzz.op_cases import BUILDERS, DTYPES, MUTATIONS
from fuzz.runner import Worker
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("FASTDECODE_FUZZ_EXAMPLES", "120"))
RANDOM = os.environ.get("FASTDECODE_FUZZ_RANDOM") == "1"  # make fuzz: a new seed each run

dims = st.fixed_dictionaries({
    "B": st.integers(0, 3), "V": st.sampled_from([1, 2, 5, 17, 64, 100]),
    "T": st.integers(0, 4), "k": st.integers(1, 4), "M": st.sampled_from([0, 1, 2, 16, 17]),
    "K": st.sampled_from([1, 5, 32, 33, 64]), "N": st.sampled_from([1, 3, 16, 17, 40]),
    "G": st.sampled_from([32, 64, 128]), "E": st.sampled_from([4, 32, 64]),
    "H": st.integers(1, 3), "Hkv": st.integers(1, 2), "D": st.sampled_from([2, 4, 16]),
    "L": st.integers(1, 8), "seed": st.integers(0, 2 ** 16),
})
mutation = st.fixed_dictionaries({
    "kind": st.sampled_from(MUTATIONS), "index": st.integers(0, 12),
    "pick": st.integers(0, 10 ** 6), "dtype": st.sampled_from(sorted(DTYPES)),
})


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


@pytest.mark.parametrize("op", sorted(BUILDERS))
def test_op_is_right_or_raises_a_clear_error(worker, op):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
              phases=[Phase.explicit, Phase.generate], print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(d=dims, mutations=st.lists(mutation, max_size=2))
    def check(d, mutations):
        # valid sizes: B >= 1 unless a mutation is meant to reach the empty batch
        case = {"op": op, "dims": {**d, "B": max(d["B"], 1) if not mutations else d["B"]},
                "mutations": mutations}
        result = worker.run(case)
        assert result["outcome"] != "bad", f"{case}: {result['detail']}"

    check()

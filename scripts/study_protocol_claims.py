"""The claims of the FashionMNIST study re-run past the transient, on the `fmnist` protocol's
leaderboard runs (#21 item 2): the IEBN paper's claims (a) and (b), and (c) whether IEBN's
robustness is its damped initialisation, with n >= 10 seeds per cell for bn, bnse, iebn, bn-damped
and iebn-b0 under the protocol's three settings.

Declared, one Holm family, before any of the protocol's runs was read (this file's first commit
precedes the commit of those runs' results). The doc that evaluates them is generated from the
committed runs under docs/leaderboard/fmnist/runs. Cells are (setting id, layer); CLEAN, CONSTANT,
MIX are the protocol's settings (clean; constant (2, 1); mix: mnist-inverted, k = 128).
Beside each, the earlier 150-step study's claim with the same id (docs/study-fmnist.md), so that
the doc can say which verdicts survived training past the transient.
"""

from noiseattack.report.claims import Claim

CLEAN, CONSTANT, MIX = "clean", "constant", "mix"

CLAIMS = (
    Claim("a1", "a", "Under constant (2, 1) BN's accuracy varies more than BN+SE's", "var",
          ((CONSTANT, "bn"), (CONSTANT, "bnse"))),
    Claim("a2", "a", "Under constant (2, 1) BN's accuracy varies more than IEBN's", "var",
          ((CONSTANT, "bn"), (CONSTANT, "iebn"))),
    Claim("b1", "b", "IEBN loses less than BN to the mix attack (mnist-inverted, k=128)", "mean",
          ((MIX, "iebn"), (CLEAN, "iebn"), (MIX, "bn"), (CLEAN, "bn")), (1, -1, -1, 1)),
    Claim("b3", "b", "The mix attack hurts BN (mix below clean)", "mean", ((MIX, "bn"), (CLEAN, "bn")), (1, -1), -1),
    Claim("c1", "c", "A damped start alone makes BN robust: bn-damped above bn under constant (2, 1)", "mean",
          ((CONSTANT, "bn-damped"), (CONSTANT, "bn")), (1, -1)),
    Claim("c2", "c", "IEBN needs its damped start: iebn-b0 below iebn under constant (2, 1)", "mean",
          ((CONSTANT, "iebn-b0"), (CONSTANT, "iebn")), (1, -1), -1),
    Claim("c3", "c", "IEBN does more than a damped BN: iebn above bn-damped under constant (2, 1)", "mean",
          ((CONSTANT, "iebn"), (CONSTANT, "bn-damped")), (1, -1)),
    Claim("c4", "c", "The damped start changes clean accuracy: bn-damped vs bn, clean", "mean",
          ((CLEAN, "bn-damped"), (CLEAN, "bn")), (1, -1), 0),
    Claim("c5", "c", "The gate's start changes clean accuracy: iebn-b0 vs iebn, clean", "mean",
          ((CLEAN, "iebn-b0"), (CLEAN, "iebn")), (1, -1), 0),
    Claim("c6", "c", "A damped start alone makes BN lose less to the mix attack: bn-damped's drop smaller than bn's",
          "mean", ((MIX, "bn-damped"), (CLEAN, "bn-damped"), (MIX, "bn"), (CLEAN, "bn")), (1, -1, -1, 1)),
)
# Not a claim of the family but reported beside it (#21 item 3): each BN-type layer's mix accuracy
# with PreciseBN statistics against its trained running statistics (precise_acc - final_acc, paired by run).

"""Where each kind of episode draws its initial states (``reset(seed=...)``).

A policy cloned on some initial states succeeds more often there than elsewhere (the shipped
warm start pushed 34.5 % from its demonstrations' states against 18.5 % from held-out ones), and a
PRM scored on the states it was trained on looks better than it is. So each kind of episode starts
from a range of seeds of its own, at least 200,000 wide (no use draws more than 100,000 above its
start); ``scripts/build_default_models.sh`` uses the same numbers (a test checks they agree).

==========================  =============  ==============================================
range                       first seed     used by
==========================  =============  ==============================================
``DEMONSTRATIONS``          0              expert demonstrations (``envs.demos``), PRM
                                           perturbed-expert training data (``reward.data``)
``DAGGER``                  500,000        DAgger's policy episodes; the PRM's policy-
                                           rollout training data (both training sets)
``EVALUATION``              1,000,000      policy evaluation (``vla_rl.evaluate``)
``PRM_HELDOUT``             2,000,000      the PRM's held-out expert set
``PRM_POLICY_HELDOUT``      2,200,000      the PRM's held-out policy rollouts
``HELDOUT``                 3,000,000      vision pretraining's held-out frames, best-of-N
``PRM_CALIBRATION``         4,000,000      the PRM's calibration set (its decision
                                           threshold and score window)
``ROLLOUTS``                10,000,000     PPO/GRPO training rollouts (``trainer.rollout_seed``)
==========================  =============  ==============================================
"""

DEMONSTRATIONS = 0
DAGGER = 500_000
EVALUATION = 1_000_000
PRM_HELDOUT = 2_000_000
PRM_POLICY_HELDOUT = 2_200_000
HELDOUT = 3_000_000
PRM_CALIBRATION = 4_000_000
ROLLOUTS = 10_000_000

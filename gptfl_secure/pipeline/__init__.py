"""The GPT-FL pipeline, independent of how messages travel: the run configuration
(:mod:`.config`), set-up (:mod:`.setup`: data, partition, model, optimizer), the update codec
(:mod:`.codecs`), label discovery (:mod:`.discovery`), synthetic pretraining
(:mod:`.pretraining`), one round's plan and close (:mod:`.rounds`), the aggregation interface
(:mod:`.aggregation`), run state and checkpoints (:mod:`.state`), DP accounting (:mod:`.dp`),
outputs (:mod:`.outputs`) and the public seed streams (:mod:`.seeds`).

Two drivers run it: :mod:`gptfl_secure.sim` (every client in one process) and
:mod:`gptfl_secure.flower` (a Flower ServerApp and ClientApps).
"""

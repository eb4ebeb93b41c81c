"""The learnware core both sides compute identically: the semantic specification and its island
key, the Gaussian kernel and MMD arithmetic, herding, the simplex QP, island objectives and
metrics, a new island's base kernel, and safe model files.

Not the wire format (that is ``protocol/``); imports go ``client_sdk -> learnware_core ->
protocol`` and ``market_server -> learnware_core, protocol``. Imports neither ``client_sdk`` nor
``market_server``.
"""

"""Stage 1, the data model every analysis shares: the canonical incident table and its readers
(``incidents``), validation errors (``errors``), periods, police.uk categories, harm weight tables
(``harm`` with ``weights/``) and the :class:`AnalysisResult` every analysis returns (``result``).
"""

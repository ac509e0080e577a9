"""Stage 3, where harm concentrates: kernel density (``kde``), Getis-Ord Gi* (``gistar``) with
multiple-testing control (``significance``), emerging hot spots (``emerging``), change between periods
(``change``) and how well one period's hot spots predict the next (``accuracy``).
"""

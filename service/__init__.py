"""The HTTP side of the training service, plus the domain pieces both processes share.

Nothing here imports Flask at package import: the worker uses the database models, the job
spec and the settings without pulling in the web layer.
"""

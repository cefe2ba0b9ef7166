"""Deployment: SuperLink and SuperNodes as processes (``launcher``) or containers (``compose``).

Both take their command lines from :mod:`fedpeft.tools.deploy.flags`.
"""

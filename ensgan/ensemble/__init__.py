"""Combining members: sampling combinations and the stacking meta-learner."""

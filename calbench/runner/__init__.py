"""Running a matrix: the results store, one run's execution, and the local device scheduler."""

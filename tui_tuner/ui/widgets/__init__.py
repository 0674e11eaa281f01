"""The main screen's widgets; each draws from the StudyModel and nothing else."""

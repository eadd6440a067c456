"""Pipeline: ``pgolf run`` / ``pgolf demo`` chaining the stages, and reports with plots."""

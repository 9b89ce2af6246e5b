"""Records first, drawing second: plots and tables are drawn from history DataFrames."""

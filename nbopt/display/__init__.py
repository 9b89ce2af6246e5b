"""Records first, drawing second: info records computed from histories and studies (plots), drawn
into figures, and shown live by one kind of board (board: how; live, compare and the sweep's board:
what)."""

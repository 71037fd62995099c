"""The pure core: desired and observed model, compile, euid, templating, plan, explain, plan-file
diffs. No I/O, no clock (now is passed in), no logging, no dynamic imports."""

"""Long-running tools as tasks on a running bus (issue 21): configuration, the Python
handle, and the journals a task store writes to. Import the modules directly; this
package imports nothing so that the configuration can import its settings cheaply."""

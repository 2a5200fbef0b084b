"""The shipped calibration / evaluation splits (manifest.json says where they come from) and
make_calibration_set.py, which builds the same kind of split from a user's own text. Installed as
edge_quamba.calib_data; find the folder with edge_quamba.resources.calib_data_dir()."""

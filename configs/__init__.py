"""The shipped configs (YAML, one folder per detector family and ``demo/``) and the demo teacher's
weights, installed as package data of ``pointdistiller.configs``: ``pd-train --demo`` finds them in a
plain (non-editable) install too."""
import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))

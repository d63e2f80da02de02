"""Training-time compression on the tf_keras working model: pruning and QAT (tfmot)."""

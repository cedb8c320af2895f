"""Few-shot gait personalization on HuGaDB: tasks and protocol, model inputs, baselines, training, evaluation.

A *task* is one walker in one walking condition. A walker calibrates with K gait cycles taken at the start
of a recording (the support set) and is scored on cycles from later in the same recording (the main
protocol) or from another recording (re-donning). Meta-training, validation and test subjects are disjoint.
"""

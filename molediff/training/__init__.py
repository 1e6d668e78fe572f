"""molediff.training"""

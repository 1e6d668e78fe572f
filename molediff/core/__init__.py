"""molediff.core"""

"""mambadna.train"""

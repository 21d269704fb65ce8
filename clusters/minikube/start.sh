#!/bin/sh
# Start the minimesh minikube cluster by hand, from the checkout root. This is the exact command line
# `minimesh cluster up --provider minikube` runs (built from profile.yaml; a test keeps them in sync),
# except that minimesh also sets KUBECONFIG to its own file so your ~/.kube/config stays untouched.
# Needs minikube v1.35.0 or newer and a running Docker engine.
set -eu
exec minikube start --profile=minimesh --driver=docker --kubernetes-version=v1.32.2 --cpus=2 --memory=4096 --mount --mount-string="$(pwd):/opt/minimesh" --wait=all
